"""In-memory implementations of ota's ports for handler tests (conditional writes and outboxes included)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from fleet_contracts.device import OtaUpgradeStatus
from fleet_contracts.ota import DeviceUpgradeState as S
from fleet_contracts.ota import ReleaseStage
from fleet_ota.domain import directory
from fleet_ota.domain import sweep as sw
from fleet_ota.domain.firmware import Firmware
from fleet_ota.domain.release import RegionRollout, RolloutStatus, StageCounts
from fleet_ota.domain.sweep import DirectoryEntry, Sweep
from fleet_ota.domain.targeting import DeviceFact, DeviceRecord, PlanChunk
from fleet_ota.domain.upgrade import BUCKETS, TERMINAL, DeviceUpgrade, UpgradePolicy, bucket
from fleet_ota.ports import Claim, CountedEntry, UpgradeRefused
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
class FakeUpgrades:
    docs: dict[str, DeviceUpgrade] = field(default_factory=dict)
    outbox: list[CountedEntry] = field(default_factory=list)

    async def create(self, upgrades: Sequence[DeviceUpgrade]) -> list[DeviceUpgrade]:
        created = [u for u in upgrades if u.upgrade_id not in self.docs]
        for u in created:
            self.docs[u.upgrade_id] = u
        return created

    def _of(self, release_id: str, region: str) -> list[DeviceUpgrade]:
        return [u for u in self.docs.values() if u.release_id == release_id and u.region == region]

    async def get(self, upgrade_id: str) -> DeviceUpgrade | None:
        return self.docs.get(upgrade_id)

    async def stages_of(self, release_id: str, device_ids: Sequence[str]) -> dict[str, ReleaseStage]:
        found = (self.docs.get(f"{release_id}:{d}") for d in device_ids)
        return {u.device_id: u.stage for u in found if u is not None}

    async def open_of_device(self, device_id: str) -> list[DeviceUpgrade]:
        return [u for u in self.docs.values() if u.device_id == device_id and u.state not in TERMINAL]

    async def save(
        self, upgrade: DeviceUpgrade, expected_version: int, outbox: Sequence[CountedEntry]
    ) -> bool:
        if self.docs[upgrade.upgrade_id].version != expected_version:
            return False
        self.docs[upgrade.upgrade_id] = upgrade
        self.outbox.extend(outbox)
        return True

    async def ready_to_command(
        self, release_id: str, region: str, now: datetime, limit: int
    ) -> list[DeviceUpgrade]:
        found = [
            u
            for u in self.docs.values()
            if u.release_id == release_id
            and u.region == region
            and (
                u.state == S.PENDING
                or (u.state == S.RETRYING and u.retry_at is not None and u.retry_at <= now)
            )
        ]
        return found[:limit]

    async def deadline_passed(self, now: datetime, limit: int) -> list[DeviceUpgrade]:
        return [
            u
            for u in self.docs.values()
            if u.state in (S.COMMANDED, S.UPGRADING) and u.deadline and u.deadline <= now
        ][:limit]

    async def upgrading_before(self, before: datetime, limit: int) -> list[DeviceUpgrade]:
        found = [
            u
            for u in self.docs.values()
            if u.state in (S.UPGRADING, S.WAITING)
            and not u.tuya_done
            and u.commanded_at
            and u.commanded_at <= before
        ]
        return sorted(found, key=lambda u: u.commanded_at or before)[:limit]

    async def commanded_before(self, before: datetime, limit: int) -> list[DeviceUpgrade]:
        return [
            u
            for u in self.docs.values()
            if u.state == S.COMMANDED and u.commanded_at and u.commanded_at <= before
        ][:limit]

    async def cancellable(self, release_id: str, region: str, limit: int) -> list[DeviceUpgrade]:
        return [u for u in self._of(release_id, region) if u.state in (S.PENDING, S.RETRYING)][:limit]

    async def has_open(self, release_id: str, region: str) -> bool:
        return any(u.state not in TERMINAL for u in self._of(release_id, region))

    async def done_unverified(self, limit: int) -> list[DeviceUpgrade]:
        return [u for u in self.docs.values() if u.state == S.UPGRADING and u.tuya_done][:limit]


@dataclass
class _Chunk:
    chunk: PlanChunk
    claimed: int = 0
    claimed_at: datetime | None = None
    cancelled_from: int | None = None
    open: bool = True

    @property
    def claimable(self) -> bool:
        return self.open and self.cancelled_from is None and self.claimed < len(self.chunk.device_ids)


@dataclass
class FakePlans:
    """Chunks as the Mongo store keeps them (claims, closing once every claimed id has its upgrade)."""

    upgrades: FakeUpgrades
    chunks: dict[str, _Chunk] = field(default_factory=dict)
    walks: dict[str, Sweep] = field(default_factory=dict)
    outbox: list[CountedEntry] = field(default_factory=list)

    async def add_sweep(self, sweep: Sweep, outbox: Sequence[CountedEntry]) -> None:
        if sweep.sweep_id not in self.walks:
            self.walks[sweep.sweep_id] = sweep
            self.outbox.extend(outbox)

    async def sweeps(self, release_id: str, region: str) -> list[Sweep]:
        return [
            s
            for _, s in sorted(self.walks.items())
            if (s.release_id, s.region) == (release_id, region) and s.open
        ]

    async def get_sweep(self, sweep_id: str) -> Sweep | None:
        return self.walks.get(sweep_id)

    async def save_sweep(self, sweep: Sweep, expected_version: int, outbox: Sequence[CountedEntry]) -> bool:
        if self.walks[sweep.sweep_id].version != expected_version:
            return False
        self.walks[sweep.sweep_id] = sweep
        self.outbox.extend(outbox)
        return True

    def _of(self, release_id: str, region: str) -> list[_Chunk]:
        return [
            c
            for _, c in sorted(self.chunks.items())
            if (c.chunk.release_id, c.chunk.region) == (release_id, region)
        ]

    async def add(self, chunks: Sequence[PlanChunk]) -> None:
        for c in chunks:
            if c.chunk_id not in self.chunks:
                self.chunks[c.chunk_id] = _Chunk(c)
                n = len(c.device_ids)
                cid = f"{c.release_id}:{c.region}:{c.stage.value}"
                self.outbox.append(
                    CountedEntry.counter_only(f"ota:{c.chunk_id}:planned", cid, {"targeted": n, "pending": n})
                )

    async def device_ids(self, release_id: str, region: str, *, besides: str) -> set[str]:
        return {
            d for c in self._of(release_id, region) if c.chunk.batch != besides for d in c.chunk.device_ids
        }

    async def count_in_stage(self, release_id: str, region: str, stage: ReleaseStage, *, besides: str) -> int:
        return sum(
            len(c.chunk.device_ids)
            for c in self._of(release_id, region)
            if c.chunk.stage == stage and c.chunk.batch != besides
        )

    async def claim(
        self, release_id: str, region: str, limit: int, *, now: datetime, repair_before: datetime
    ) -> Claim | None:
        for c in self._of(release_id, region):
            if c.claimable:
                start, c.claimed, c.claimed_at = (
                    c.claimed,
                    min(c.claimed + limit, len(c.chunk.device_ids)),
                    now,
                )
                ch = c.chunk
                return Claim(
                    ch.chunk_id, release_id, region, ch.stage, ch.device_ids[start : c.claimed], c.claimed
                )
        for c in self._of(release_id, region):
            if not c.open:
                continue
            missing = tuple(
                d for d in c.chunk.device_ids[: c.claimed] if f"{release_id}:{d}" not in self.upgrades.docs
            )
            if not missing:
                c.open = False
            elif c.claimed_at is not None and c.claimed_at <= repair_before:
                ch = c.chunk
                return Claim(ch.chunk_id, release_id, region, ch.stage, missing, c.claimed, closing=True)
        return None

    async def fill(self, claim: Claim) -> bool:
        c = self.chunks[claim.chunk_id]
        if claim.closing and c.claimed == claim.claimed:
            c.open = False
        return c.cancelled_from is not None

    async def cancel(self, release_id: str, region: str) -> int:
        total = 0
        for c in self._of(release_id, region):
            if c.cancelled_from is None:
                c.cancelled_from = c.claimed
                left = len(c.chunk.device_ids) - c.claimed
                if left:
                    cid = f"{release_id}:{region}:{c.chunk.stage.value}"
                    entry_id = f"ota:{c.chunk.chunk_id}:cancelled"
                    self.outbox.append(
                        CountedEntry.counter_only(entry_id, cid, {"pending": -left, "cancelled": left})
                    )
                total += left
        return total

    async def has_open(self, release_id: str, region: str) -> bool:
        return any(c.open for c in self._of(release_id, region)) or bool(
            await self.sweeps(release_id, region)
        )


@dataclass
class FakeProgress:
    """Counters; `relay` applies the deltas the upgrade and plan outboxes hold, as the real relay does."""

    upgrades: FakeUpgrades
    plans: FakePlans
    counters: dict[str, dict[str, int]] = field(default_factory=dict)
    applied: set[str] = field(default_factory=set)

    async def open(self, release_id: str, region: str, stage: ReleaseStage) -> None:
        self.counters.setdefault(f"{release_id}:{region}:{stage.value}", {})

    def relay(self) -> None:
        for e in [*self.plans.outbox, *self.upgrades.outbox]:
            if e.counter_id and e.id not in self.applied:
                self.applied.add(e.id)
                c = self.counters[e.counter_id]  # `open` made it: a delta never creates one
                for k, v in e.delta.items():
                    c[k] = c.get(k, 0) + v

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
        """Every upgrade in its bucket; every planned id without an upgrade pending, or cancelled once its
        chunk was stopped before it was claimed."""
        c = dict.fromkeys(BUCKETS, 0)
        for u in self.upgrades.docs.values():
            if (u.release_id, u.region, u.stage) == (release_id, region, stage):
                c[bucket(u.state)] += 1
        for ch in self.plans._of(release_id, region):
            if ch.chunk.stage != stage:
                continue
            cut = ch.cancelled_from if ch.cancelled_from is not None else len(ch.chunk.device_ids)
            for i, d in enumerate(ch.chunk.device_ids):
                if f"{release_id}:{d}" not in self.upgrades.docs:
                    c["pending" if i < cut else "cancelled"] += 1
        for w in self.plans.walks.values():
            if (w.release_id, w.region, w.stage) != (release_id, region, stage):
                continue
            if not w.ended:
                c["pending"] += max(w.planned - w.claimed, 0)
            c["cancelled"] += w.cancelled or 0
            for claim in w.claims:
                for d in claim.device_ids:
                    doc = self.upgrades.docs.get(f"{release_id}:{d}")
                    c["pending"] += doc is None or doc.stage != stage
        return StageCounts(targeted=sum(c.values()), **c)


@dataclass
class FakeDevices:
    """The directory: counts are always exact here (the real one counts each change once, a bit later)."""

    items: dict[str, DeviceRecord] = field(default_factory=dict)

    async def record(self, device: DeviceRecord) -> None:
        self.items[device.device_id] = device

    async def record_many(self, devices: Sequence[DeviceRecord]) -> None:
        for d in devices:
            self.items[d.device_id] = d

    async def catch_up(self) -> None:
        return None

    async def counts(self, product_id: str, region: str, channel: int) -> dict[str, int]:
        found: dict[str, int] = {}
        for d in self.items.values():
            if (d.product_id, d.region) == (product_id, region) and channel in d.versions:
                found[d.versions[channel]] = found.get(d.versions[channel], 0) + 1
        return found

    def _entries(self, buckets: Sequence[str]) -> list[tuple[str, DeviceRecord]]:
        return sorted(
            (sw.position(d.device_id, ch), d)
            for d in self.items.values()
            for ch, v in d.versions.items()
            if sw.bucket(d.product_id, d.region, ch, v) in buckets
        )

    async def page(
        self, buckets: Sequence[str], after: str, before: str | None, limit: int
    ) -> tuple[list[DirectoryEntry], bool]:
        inside = [
            DirectoryEntry(pos, d.device_id, d.activated_at)
            for pos, d in self._entries(buckets)
            if pos > after and (before is None or pos < before)
        ]
        return inside[:limit], len(inside) > limit

    async def activated_after(self, buckets: Sequence[str], since: datetime) -> list[DeviceRecord]:
        return [d for _, d in self._entries(buckets) if d.activated_at > since]

    async def of_devices(self, device_ids: Sequence[str]) -> list[DeviceRecord]:
        return [self.items[d] for d in device_ids if d in self.items]

    facts: dict[str, DeviceFact] = field(default_factory=dict)
    stale: set[str] = field(default_factory=set)

    async def learn(
        self, device_id: str, product_id: str, region: str, at: datetime, *, activated: bool, changed: bool
    ) -> None:
        f = self.facts.get(device_id)
        if f is None:
            self.facts[device_id] = DeviceFact(device_id, product_id, region, at, activated, 1)
            self.stale.add(device_id)
            return
        if not (activated or changed):
            return
        later = activated and (at > f.activated_at or not f.activation_seen)
        self.facts[device_id] = DeviceFact(
            device_id,
            product_id,
            region,
            at if later else f.activated_at,
            f.activation_seen or activated,
            f.mark + 1,
        )
        self.stale.add(device_id)

    async def to_refresh(self, limit: int) -> list[DeviceFact]:
        return [self.facts[d] for d in sorted(self.stale)][:limit]

    async def refreshing(self, product_id: str, region: str, since: datetime) -> bool:
        return any(
            (f.product_id, f.region) == (product_id, region) and f.activated_at > since
            for f in (self.facts[d] for d in self.stale)
        )

    async def refreshed(self, fact: DeviceFact, versions: dict[int, str]) -> None:
        record = directory.refreshed(fact, self.items.get(fact.device_id), versions)
        if record is not None:
            self.items[fact.device_id] = record
        if self.facts[fact.device_id].mark == fact.mark:
            self.stale.discard(fact.device_id)


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
class FakePacing:
    """The shared dispatch schedule; `moves` counts reservations that won."""

    next: dict[tuple[str, str], float] = field(default_factory=dict)
    moves: int = 0
    leases: dict[tuple[str, str], tuple[str, float]] = field(default_factory=dict)  # (holder, until)

    async def next_at(self, release_id: str, region: str) -> float | None:
        return self.next.get((release_id, region))

    async def move(self, release_id: str, region: str, expected: float | None, to: float) -> bool:
        if self.next.get((release_id, region)) != expected:
            return False
        self.next[(release_id, region)] = to
        self.moves += 1
        return True

    async def give_back(self, release_id: str, region: str, seconds: float) -> None:
        self.next[(release_id, region)] -= seconds

    async def hold(self, release_id: str, region: str, holder: str, *, now: float, until: float) -> bool:
        current = self.leases.get((release_id, region))
        if current is not None and current[0] != holder and current[1] > now:
            return False
        self.leases[(release_id, region)] = (holder, until)
        return True


@dataclass
class FakeTuya:
    commands: list[tuple[str, int]] = field(default_factory=list)
    clock: Clock | None = None  # when set, `sent_at` records each accepted command's time
    sent_at: list[datetime] = field(default_factory=list)
    limit_gap_s: float | None = None  # Tuya's limit as a minimum gap between commands (no burst)
    refused: int = 0
    refuse: set[str] = field(default_factory=set)
    rate_limited: set[str] = field(default_factory=set)  # Tuya answers 1199 (too frequent)
    lose_answer: set[str] = field(default_factory=set)  # the call happens, the answer never arrives
    status: dict[str, OtaUpgradeStatus] = field(default_factory=dict)
    versions: dict[str, dict[int, str]] = field(default_factory=dict)
    ended_at: dict[str, datetime] = field(default_factory=dict)  # the firmware API's `last_upgrade_time`
    ended_asked: int = 0

    async def confirm_upgrade(self, device_id: str, channel: int) -> None:
        if device_id in self.refuse:
            raise UpgradeRefused(2001, "device is offline")
        if device_id in self.rate_limited:
            raise UpgradeRefused(1199, "requests too frequently")
        if self.clock is not None:
            now = self.clock()
            if (
                self.limit_gap_s
                and self.sent_at
                and (now - self.sent_at[-1]).total_seconds() < self.limit_gap_s
            ):
                self.refused += 1
                raise UpgradeRefused(1199, "requests too frequently")
            self.sent_at.append(now)
        self.commands.append((device_id, channel))
        if device_id in self.lose_answer:
            raise TimeoutError("no answer")

    async def progress(self, device_id: str, channel: int) -> tuple[OtaUpgradeStatus, int | None]:
        return self.status.get(device_id, OtaUpgradeStatus.NO_UPDATE), None

    async def current_versions(self, device_id: str) -> dict[int, str]:
        return self.versions.get(device_id, {})

    async def upgrade_ended_at(self, device_id: str, channel: int) -> datetime | None:
        self.ended_asked += 1
        return self.ended_at.get(device_id)


NOW = datetime(2026, 11, 29, 12, tzinfo=UTC)


@dataclass
class Clock:
    now: datetime = NOW

    def __call__(self) -> datetime:
        return self.now

    async def sleep(self, seconds: float) -> None:
        """Time passes only when someone waits (dispatch waits for its slots); what is ready to run now
        (a command fired at the last slot) runs first."""
        await asyncio.sleep(0)
        self.now += timedelta(seconds=seconds)


@dataclass
class World:
    firmware: FakeFirmware = field(default_factory=FakeFirmware)
    rollouts: FakeRollouts = field(default_factory=FakeRollouts)
    upgrades: FakeUpgrades = field(default_factory=FakeUpgrades)
    devices: FakeDevices = field(default_factory=FakeDevices)
    locks: FakeLocks = field(default_factory=FakeLocks)
    pacing: FakePacing = field(default_factory=FakePacing)
    tuya: FakeTuya = field(default_factory=FakeTuya)
    clock: Clock = field(default_factory=Clock)
    plans: FakePlans = field(init=False)
    progress: FakeProgress = field(init=False)

    def __post_init__(self) -> None:
        self.plans = FakePlans(self.upgrades)
        self.progress = FakeProgress(self.upgrades, self.plans)

    def ports(self, policy: UpgradePolicy | None = None) -> Ports:
        return Ports(
            firmware=self.firmware,
            rollouts=self.rollouts,
            upgrades=self.upgrades,
            plans=self.plans,
            progress=self.progress,
            devices=self.devices,
            locks=self.locks,
            pacing=self.pacing,
            tuya=self.tuya,
            clock=self.clock,
            tenant="t",
            policy=policy or UpgradePolicy(),
            sleep=self.clock.sleep,
        )
