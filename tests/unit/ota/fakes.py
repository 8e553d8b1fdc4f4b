"""In-memory implementations of ota's ports for handler tests (conditional writes and outboxes included)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from fleet_contracts.device import OtaUpgradeStatus
from fleet_contracts.ota import DeviceUpgradeState as S
from fleet_contracts.ota import ReleaseStage
from fleet_ota.domain.firmware import Firmware
from fleet_ota.domain.release import RegionRollout, RolloutStatus, StageCounts
from fleet_ota.domain.targeting import DeviceRecord
from fleet_ota.domain.upgrade import BUCKETS, TERMINAL, DeviceUpgrade, UpgradePolicy, bucket
from fleet_ota.ports import CountedEntry, UpgradeRefused
from fleet_ota.service_layer.handlers import Ports


@dataclass
class FakeFirmware:
    items: dict[str, Firmware] = field(default_factory=dict)
    outbox: list[CountedEntry] = field(default_factory=list)

    async def get(self, firmware_id: str) -> Firmware | None:
        return self.items.get(firmware_id)

    async def add(self, firmware: Firmware, outbox: Sequence[CountedEntry]) -> bool:
        if firmware.firmware_id in self.items:
            return False
        self.items[firmware.firmware_id] = firmware
        self.outbox.extend(outbox)
        return True

    async def mark_withdrawn(self, firmware: Firmware) -> None:
        self.items[firmware.firmware_id] = firmware


@dataclass
class FakeRollouts:
    items: dict[tuple[str, str], RegionRollout] = field(default_factory=dict)
    outbox: list[CountedEntry] = field(default_factory=list)

    async def get(self, release_id: str, region: str) -> RegionRollout | None:
        return self.items.get((release_id, region))

    async def of_release(self, release_id: str) -> list[RegionRollout]:
        return sorted((r for (rid, _), r in self.items.items() if rid == release_id), key=lambda r: r.region)

    async def add(self, rollouts: Sequence[RegionRollout]) -> None:
        for r in rollouts:
            self.items.setdefault((r.release_id, r.region), r)

    async def save(
        self, rollout: RegionRollout, expected_version: int, outbox: Sequence[CountedEntry]
    ) -> bool:
        key = (rollout.release_id, rollout.region)
        if self.items[key].version != expected_version:
            return False
        self.items[key] = rollout
        self.outbox.extend(outbox)
        return True

    async def active_of_firmware(self, firmware_id: str) -> int:
        done = (RolloutStatus.STOPPED, RolloutStatus.COMPLETED)
        return sum(r.target.firmware_id == firmware_id and r.status not in done for r in self.items.values())

    async def dispatching(self) -> list[RegionRollout]:
        return [r for r in self.items.values() if r.status == RolloutStatus.RUNNING]

    async def scheduled(self) -> list[RegionRollout]:
        return [r for r in self.items.values() if r.status == RolloutStatus.SCHEDULED]


@dataclass
class _Doc:
    upgrade: DeviceUpgrade
    batch: str


@dataclass
class FakeUpgrades:
    docs: dict[str, _Doc] = field(default_factory=dict)
    outbox: list[CountedEntry] = field(default_factory=list)

    async def insert_planned(self, upgrades: Sequence[DeviceUpgrade], batch: str) -> None:
        for u in upgrades:
            self.docs.setdefault(u.upgrade_id, _Doc(u, batch))

    async def batch_size(self, release_id: str, batch: str) -> int:
        return sum(d.batch == batch and d.upgrade.release_id == release_id for d in self.docs.values())

    def _of(self, release_id: str, region: str) -> list[DeviceUpgrade]:
        return [
            d.upgrade
            for d in self.docs.values()
            if d.upgrade.release_id == release_id and d.upgrade.region == region
        ]

    async def device_ids(self, release_id: str, region: str) -> set[str]:
        return {u.device_id for u in self._of(release_id, region)}

    async def count_in_stage(self, release_id: str, region: str, stage: ReleaseStage) -> int:
        return sum(u.stage == stage for u in self._of(release_id, region))

    async def get(self, upgrade_id: str) -> DeviceUpgrade | None:
        d = self.docs.get(upgrade_id)
        return None if d is None else d.upgrade

    async def open_of_device(self, device_id: str) -> list[DeviceUpgrade]:
        return [
            d.upgrade
            for d in self.docs.values()
            if d.upgrade.device_id == device_id and d.upgrade.state not in TERMINAL
        ]

    async def save(
        self, upgrade: DeviceUpgrade, expected_version: int, outbox: Sequence[CountedEntry]
    ) -> bool:
        d = self.docs[upgrade.upgrade_id]
        if d.upgrade.version != expected_version:
            return False
        d.upgrade = upgrade
        self.outbox.extend(outbox)
        return True

    async def ready_to_command(
        self, release_id: str, region: str, batches: Sequence[str], now: datetime, limit: int
    ) -> list[DeviceUpgrade]:
        found = [
            d.upgrade
            for d in self.docs.values()
            if d.batch in batches
            and d.upgrade.release_id == release_id
            and d.upgrade.region == region
            and (
                d.upgrade.state == S.PENDING
                or (
                    d.upgrade.state == S.RETRYING
                    and d.upgrade.retry_at is not None
                    and d.upgrade.retry_at <= now
                )
            )
        ]
        return found[:limit]

    async def deadline_passed(self, now: datetime, limit: int) -> list[DeviceUpgrade]:
        return [
            d.upgrade
            for d in self.docs.values()
            if d.upgrade.state in (S.COMMANDED, S.UPGRADING)
            and d.upgrade.deadline
            and d.upgrade.deadline <= now
        ][:limit]

    async def upgrading_before(self, before: datetime, limit: int) -> list[DeviceUpgrade]:
        found = [
            d.upgrade
            for d in self.docs.values()
            if d.upgrade.state in (S.UPGRADING, S.WAITING)
            and not d.upgrade.tuya_done
            and d.upgrade.commanded_at
            and d.upgrade.commanded_at <= before
        ]
        return sorted(found, key=lambda u: u.commanded_at or before)[:limit]

    async def commanded_before(self, before: datetime, limit: int) -> list[DeviceUpgrade]:
        return [
            d.upgrade
            for d in self.docs.values()
            if d.upgrade.state == S.COMMANDED and d.upgrade.commanded_at and d.upgrade.commanded_at <= before
        ][:limit]

    async def cancellable(self, release_id: str, region: str, limit: int) -> list[DeviceUpgrade]:
        return [u for u in self._of(release_id, region) if u.state in (S.PENDING, S.RETRYING)][:limit]

    async def has_open(self, release_id: str, region: str) -> bool:
        return any(u.state not in TERMINAL for u in self._of(release_id, region))

    async def done_unverified(self, limit: int) -> list[DeviceUpgrade]:
        return [
            d.upgrade for d in self.docs.values() if d.upgrade.state == S.UPGRADING and d.upgrade.tuya_done
        ][:limit]


@dataclass
class FakeProgress:
    """Counters; `relay` applies the deltas the upgrade outbox holds, as the real relay does."""

    upgrades: FakeUpgrades
    counters: dict[str, dict[str, int]] = field(default_factory=dict)
    # (release, batch) -> (region, stage)
    counted: dict[tuple[str, str], tuple[str, ReleaseStage]] = field(default_factory=dict)
    intents: dict[tuple[str, str], tuple[str, ReleaseStage]] = field(default_factory=dict)
    applied: int = 0

    async def intend_batch(self, release_id: str, region: str, stage: ReleaseStage, batch: str) -> None:
        self.intents[(release_id, batch)] = (region, stage)

    async def batches(self, release_id: str, region: str) -> tuple[set[str], list[tuple[ReleaseStage, str]]]:
        counted = {b for (rid, b), (reg, _) in self.counted.items() if (rid, reg) == (release_id, region)}
        uncounted = [
            (stage, b)
            for (rid, b), (reg, stage) in self.intents.items()
            if (rid, reg) == (release_id, region) and b not in counted
        ]
        return counted, uncounted

    async def add_batch(
        self, release_id: str, region: str, stage: ReleaseStage, batch: str, count: int
    ) -> None:
        if (release_id, batch) in self.counted:
            return
        self.counted[(release_id, batch)] = (region, stage)
        c = self.counters.setdefault(f"{release_id}:{region}:{stage.value}", {})
        c["targeted"] = c.get("targeted", 0) + count
        c["pending"] = c.get("pending", 0) + count

    def relay(self) -> None:
        for e in self.upgrades.outbox[self.applied :]:
            if e.counter_id:
                c = self.counters.setdefault(e.counter_id, {})
                for k, v in e.delta.items():
                    c[k] = c.get(k, 0) + v
        self.applied = len(self.upgrades.outbox)

    async def counts(self, release_id: str, region: str, stage: ReleaseStage) -> StageCounts:
        self.relay()
        c = self.counters.get(f"{release_id}:{region}:{stage.value}", {})
        return StageCounts(targeted=c.get("targeted", 0), **{b: c.get(b, 0) for b in BUCKETS})

    async def of_release(self, release_id: str) -> dict[tuple[str, ReleaseStage], StageCounts]:
        found: dict[tuple[str, ReleaseStage], StageCounts] = {}
        for cid in list(self.counters):
            rid, region, stage = cid.rsplit(":", 2)
            if rid == release_id:
                found[(region, ReleaseStage(stage))] = await self.counts(rid, region, ReleaseStage(stage))
        return found

    def recount(self, release_id: str, region: str, stage: ReleaseStage) -> StageCounts:
        c = dict.fromkeys(BUCKETS, 0)
        for d in self.upgrades.docs.values():
            u = d.upgrade
            if (u.release_id, u.region, u.stage) == (release_id, region, stage):
                c[bucket(u.state)] += 1
        return StageCounts(targeted=sum(c.values()), **c)


@dataclass
class FakeDevices:
    items: dict[str, DeviceRecord] = field(default_factory=dict)

    async def candidates(self, product_id: str, region: str, channel: int, below: str) -> list[DeviceRecord]:
        # deliberately unfiltered by version: the domain's own check must hold
        return [d for d in self.items.values() if d.product_id == product_id and d.region == region]

    async def record(self, device: DeviceRecord) -> None:
        self.items[device.device_id] = device

    async def record_many(self, devices: Sequence[DeviceRecord]) -> None:
        for d in devices:
            self.items[d.device_id] = d


@dataclass
class FakeLocks:
    held: dict[str, tuple[int, str]] = field(default_factory=dict)

    async def acquire(self, device_id: str, channel: int, upgrade_id: str) -> bool:
        current = self.held.setdefault(device_id, (channel, upgrade_id))
        return current[1] == upgrade_id

    async def release(self, device_id: str, upgrade_id: str) -> None:
        if self.held.get(device_id, (0, ""))[1] == upgrade_id:
            del self.held[device_id]


@dataclass
class FakeTuya:
    commands: list[tuple[str, int]] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)
    rate_limited: set[str] = field(default_factory=set)  # Tuya answers 1199 (too frequent)
    lose_answer: set[str] = field(default_factory=set)  # the call happens, the answer never arrives
    status: dict[str, OtaUpgradeStatus] = field(default_factory=dict)
    versions: dict[str, dict[int, str]] = field(default_factory=dict)

    async def confirm_upgrade(self, device_id: str, channel: int) -> None:
        if device_id in self.refuse:
            raise UpgradeRefused(2001, "device is offline")
        if device_id in self.rate_limited:
            raise UpgradeRefused(1199, "requests too frequently")
        self.commands.append((device_id, channel))
        if device_id in self.lose_answer:
            raise TimeoutError("no answer")

    async def progress(self, device_id: str, channel: int) -> tuple[OtaUpgradeStatus, int | None]:
        return self.status.get(device_id, OtaUpgradeStatus.NO_UPDATE), None

    async def current_versions(self, device_id: str) -> dict[int, str]:
        return self.versions.get(device_id, {})


NOW = datetime(2026, 11, 29, 12, tzinfo=UTC)


@dataclass
class Clock:
    now: datetime = NOW

    def __call__(self) -> datetime:
        return self.now


@dataclass
class World:
    firmware: FakeFirmware = field(default_factory=FakeFirmware)
    rollouts: FakeRollouts = field(default_factory=FakeRollouts)
    upgrades: FakeUpgrades = field(default_factory=FakeUpgrades)
    devices: FakeDevices = field(default_factory=FakeDevices)
    locks: FakeLocks = field(default_factory=FakeLocks)
    tuya: FakeTuya = field(default_factory=FakeTuya)
    clock: Clock = field(default_factory=Clock)
    progress: FakeProgress = field(init=False)

    def __post_init__(self) -> None:
        self.progress = FakeProgress(self.upgrades)

    def ports(self, policy: UpgradePolicy | None = None) -> Ports:
        return Ports(
            firmware=self.firmware,
            rollouts=self.rollouts,
            upgrades=self.upgrades,
            progress=self.progress,
            devices=self.devices,
            locks=self.locks,
            tuya=self.tuya,
            clock=self.clock,
            tenant="t",
            policy=policy or UpgradePolicy(),
        )
