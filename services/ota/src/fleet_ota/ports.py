"""The ports ota's handlers use: repositories, the outbox relay's publisher, Tuya's OTA API, the clock.

Adapters in `fleet_ota.adapters` implement them on MongoDB, Pulsar and the shared Tuya client; unit tests use
fakes. Every state change is stored with its outbox entries in one single-document write, conditional on the
document's version (`save` returns False when another writer got there first: reload and decide again).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from fleet_contracts.device import OtaUpgradeStatus
from fleet_contracts.ota import ReleaseStage
from fleet_contracts.outbox import OutboxEntry
from fleet_ota.domain.firmware import Firmware
from fleet_ota.domain.release import RegionRollout, StageCounts
from fleet_ota.domain.sweep import DirectoryEntry, Sweep
from fleet_ota.domain.targeting import DeviceFact, DeviceRecord, PlanChunk
from fleet_ota.domain.upgrade import DeviceUpgrade


@dataclass(frozen=True, slots=True)
class CountedEntry:
    """An outbox entry (the shared layout) and the progress counter delta it carries (applied exactly once).

    The event's id is deterministic (document id and version), so a relay that runs twice publishes the same
    id and applies the delta at most once (`ProgressRepository.apply`). A counter-only entry (planning a
    chunk, cancelling what a chunk left) has no event, only its own deterministic `entry_id`.
    """

    event: OutboxEntry | None
    counter_id: str | None = None
    delta: dict[str, int] = field(default_factory=dict)
    entry_id: str = ""

    @property
    def id(self) -> str:
        return self.event.id if self.event is not None else self.entry_id

    @classmethod
    def counter_only(cls, entry_id: str, counter_id: str, delta: dict[str, int]) -> CountedEntry:
        return cls(None, counter_id, delta, entry_id)

    def to_document(self) -> dict[str, Any]:
        # stored entries are removed by exact equality: this is the one place that lays them out
        head = self.event.to_document() if self.event is not None else {"id": self.entry_id}
        return {**head, "counter": self.counter_id, "delta": self.delta}

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> CountedEntry:
        event = OutboxEntry.from_document(doc) if "topic" in doc else None
        return cls(event, doc.get("counter"), dict(doc.get("delta") or {}), "" if event else doc["id"])


@dataclass(frozen=True, slots=True)
class Claim:
    """Device ids of one plan chunk handed to a dispatcher, which creates their upgrade documents now.

    Usually a new range (`closing` False). Once a chunk is claimed to its end, it is closed when every claimed
    id has its document; ids a dispatcher claimed but never created (it died in between) are handed out again
    after a grace period (`closing` True: they are created, duplicates ignored, and the chunk is closed).
    """

    chunk_id: str
    release_id: str
    region: str
    stage: ReleaseStage
    device_ids: tuple[str, ...]
    claimed: int  # the chunk's claimed count this claim leaves
    closing: bool = False
    sweep: str | None = None  # the claim is a walk's (`Sweep.sweep_id`), under this key
    key: str = ""


class Clock(Protocol):
    def __call__(self) -> datetime: ...


class FirmwareRepository(Protocol):
    async def get(self, firmware_id: str) -> Firmware | None: ...

    async def add(self, firmware: Firmware, outbox: Sequence[CountedEntry]) -> bool:
        """Insert; False when an entry with this id already exists (nothing written)."""

    async def mark_withdrawn(self, firmware: Firmware) -> None: ...


class RolloutRepository(Protocol):
    async def get(self, release_id: str, region: str) -> RegionRollout | None: ...

    async def of_release(self, release_id: str) -> list[RegionRollout]: ...

    async def add(self, rollouts: Sequence[RegionRollout]) -> None:
        """Insert a new release's rollouts (one document each; existing ones are left as they are)."""

    async def save(
        self, rollout: RegionRollout, expected_version: int, outbox: Sequence[CountedEntry]
    ) -> bool: ...

    async def active_of_firmware(self, firmware_id: str) -> int:
        """How many rollouts of this firmware are not stopped or completed."""

    async def dispatching(self) -> list[RegionRollout]:
        """Rollouts that are running (the dispatcher's and the evaluator's work list)."""

    async def scheduled(self) -> list[RegionRollout]:
        """Rollouts not started yet (the scheduler starts them when their start time comes)."""


class PlanRepository(Protocol):
    """A stage's planned devices, in chunk documents of a few hundred ids; each chunk carries its own count
    (`targeted` and `pending` + its size) in its outbox, so inserting it again counts nothing twice."""

    async def add(self, chunks: Sequence[PlanChunk]) -> None:
        """Insert (a chunk already there is left as it is)."""

    async def device_ids(self, release_id: str, region: str, *, besides: str) -> set[str]:
        """Every device planned in the region, any stage, except by the batch `besides`."""

    async def count_in_stage(self, release_id: str, region: str, stage: ReleaseStage, *, besides: str) -> int:
        """Devices planned in the stage, except by the batch `besides`."""

    async def claim(
        self, release_id: str, region: str, limit: int, *, now: datetime, repair_before: datetime
    ) -> Claim | None:
        """Take up to `limit` more ids of the region's chunks (a conditional write: two dispatchers never take
        the same range); else close a chunk whose claimed ids all have documents, or hand out again the ids of
        a claim made before `repair_before` that never got theirs. None: nothing to do now."""

    async def fill(self, claim: Claim) -> bool:
        """The claim's upgrade documents exist (a closing claim closes its chunk); returns whether the chunk
        was cancelled meanwhile (the caller then cancels what it created)."""

    async def cancel(self, release_id: str, region: str) -> int:
        """Stop the region's chunks: ids not yet claimed move from `pending` to `cancelled` (counted in the
        same write); returns how many."""

    async def has_open(self, release_id: str, region: str) -> bool:
        """Whether any chunk or walk is not closed yet (an id may still wait for its upgrade document)."""

    async def add_sweep(self, sweep: Sweep, outbox: Sequence[CountedEntry]) -> None:
        """Insert a stage's walk (one already there is left as it is: planning again adds nothing)."""

    async def sweeps(self, release_id: str, region: str) -> list[Sweep]:
        """The region's walks that are open (walking, or with claims not confirmed yet)."""

    async def get_sweep(self, sweep_id: str) -> Sweep | None: ...

    async def save_sweep(self, sweep: Sweep, expected_version: int, outbox: Sequence[CountedEntry]) -> bool:
        """One conditional write (on the walk's version) with the counter entries of the step."""


class UpgradeRepository(Protocol):
    async def create(self, upgrades: Sequence[DeviceUpgrade]) -> list[DeviceUpgrade]:
        """Insert new pending upgrades (unique per release and device); returns those this call inserted
        (the others existed: another dispatcher has them)."""

    async def get(self, upgrade_id: str) -> DeviceUpgrade | None: ...

    async def stages_of(self, release_id: str, device_ids: Sequence[str]) -> dict[str, ReleaseStage]:
        """Which of these devices have an upgrade in the release, and in which stage."""

    async def open_of_device(self, device_id: str) -> list[DeviceUpgrade]:
        """The device's upgrades that are not settled, any release."""

    async def save(
        self, upgrade: DeviceUpgrade, expected_version: int, outbox: Sequence[CountedEntry]
    ) -> bool: ...

    async def ready_to_command(
        self, release_id: str, region: str, now: datetime, limit: int
    ) -> list[DeviceUpgrade]:
        """Pending upgrades, and retrying ones whose backoff is over."""

    async def has_open(self, release_id: str, region: str) -> bool:
        """Whether any upgrade of the region is pending, in flight or waiting (checked before completing)."""

    async def deadline_passed(self, now: datetime, limit: int) -> list[DeviceUpgrade]: ...

    async def commanded_before(self, before: datetime, limit: int) -> list[DeviceUpgrade]:
        """Commanded attempts with no news since `before`: crash recovery reconciles them from Tuya."""

    async def upgrading_before(self, before: datetime, limit: int) -> list[DeviceUpgrade]:
        """Upgrades under way or waiting since before `before` that Tuya has not called done (oldest first):
        polled, so a lost or late push never leaves a device waiting for news."""

    async def cancellable(self, release_id: str, region: str, limit: int) -> list[DeviceUpgrade]: ...

    async def done_unverified(self, limit: int) -> list[DeviceUpgrade]:
        """Upgrades Tuya called done whose device has not yet reported the new version."""


class ProgressRepository(Protocol):
    async def open(self, release_id: str, region: str, stage: ReleaseStage) -> None:
        """Create the stage's counter document (zeros) if it is missing: deltas are applied to it."""

    async def counts(self, release_id: str, region: str, stage: ReleaseStage) -> StageCounts: ...

    async def of_release(self, release_id: str) -> dict[tuple[str, ReleaseStage], StageCounts]: ...


class DispatchPacing(Protocol):
    """Each region's dispatch schedule, shared by every replica: when its next command is due (seconds since
    the epoch), so replicas together keep to the region's rate."""

    async def next_at(self, release_id: str, region: str) -> float | None: ...

    async def move(self, release_id: str, region: str, expected: float | None, to: float) -> bool:
        """Reserve a round's commands: one conditional write, only if the schedule still says `expected`
        (None: never written). False: another replica reserved first (read again)."""

    async def give_back(self, release_id: str, region: str, seconds: float) -> None:
        """Return the time of reserved commands that were not sent (an atomic decrement)."""

    async def hold(self, release_id: str, region: str, holder: str, *, now: float, until: float) -> bool:
        """A lease on the schedule (one replica sends at a time): taken or renewed until `until` if `holder`
        holds it already or it ended before `now` (one conditional write). False: another replica holds it."""


class DeviceDirectory(Protocol):
    """ota's own record of devices, one entry per device and channel, in buckets (`sweep.bucket`) with a
    count per bucket kept exactly once per write (fed by imports, device events and the OpenAPI)."""

    async def record(self, device: DeviceRecord) -> None: ...

    async def record_many(self, devices: Sequence[DeviceRecord]) -> None: ...

    async def catch_up(self) -> None:
        """Count the changes written so far (within a time budget): planning reads the counts next."""

    async def counts(self, product_id: str, region: str, channel: int) -> dict[str, int]:
        """Version -> devices of the product in the region on it (as counted so far)."""

    async def page(
        self, buckets: Sequence[str], after: str, before: str | None, limit: int
    ) -> tuple[list[DirectoryEntry], bool]:
        """The entries of these buckets positioned after `after` (and before `before`), in position order, at
        most about `limit`; the flag says whether more follow the last one returned."""

    async def activated_after(self, buckets: Sequence[str], since: datetime) -> list[DeviceRecord]:
        """Devices of these buckets activated after `since` (late joiners)."""

    async def of_devices(self, device_ids: Sequence[str]) -> list[DeviceRecord]: ...

    async def learn(
        self, device_id: str, product_id: str, region: str, at: datetime, *, activated: bool, changed: bool
    ) -> None:
        """A device event: a device not known yet is noted (first seen `at`); an activation sets its
        activation time (a later one wins); `changed` (or a new device) marks its versions to be fetched."""

    async def to_refresh(self, limit: int) -> list[DeviceFact]:
        """Devices whose versions are to be fetched."""

    async def refreshing(self, product_id: str, region: str, since: datetime) -> bool:
        """Whether a device of the product and region, activated (or first heard of) after `since`, has its
        versions still to be fetched (a late joiner not in the directory yet)."""

    async def refreshed(self, fact: DeviceFact, versions: dict[int, str]) -> None:
        """Record the versions fetched (in the directory, counted) and clear the mark, unless an event marked
        the device again meanwhile."""


class ChannelLocks(Protocol):
    """One channel at a time per device: a lock per device naming the upgrade that holds it."""

    async def acquire(self, device_id: str, channel: int, upgrade_id: str) -> bool:
        """True if the lock is free or already held by this upgrade."""

    async def release(self, device_id: str, upgrade_id: str) -> None: ...


class UpgradeRefused(Exception):
    """Tuya answered the upgrade command with an error: the command did not take effect."""

    def __init__(self, code: int | None, message: str) -> None:
        super().__init__(f"Tuya refused the upgrade ({code}): {message}")
        self.code = code

    @property
    def rate_limited(self) -> bool:
        """1110 / 1199: Tuya turned the call away for its rate limit; the device never heard of it."""
        return self.code in (1110, 1199)


class TuyaOta(Protocol):
    async def confirm_upgrade(self, device_id: str, channel: int) -> None:
        """Start the upgrade. Raises `UpgradeRefused` when Tuya refused; any other error leaves it unknown."""

    async def progress(self, device_id: str, channel: int) -> tuple[OtaUpgradeStatus, int | None]: ...

    async def current_versions(self, device_id: str) -> dict[int, str]:
        """Channel -> version the device last reported (`GET /v2.0/cloud/thing/{id}/firmware`)."""

    async def upgrade_ended_at(self, device_id: str, channel: int) -> datetime | None:
        """When the channel's last upgrade ended at Tuya (the firmware API's `last_upgrade_time`); None:
        Tuya gives no time."""


class EventPublisher(Protocol):
    async def publish(self, entries: Sequence[OutboxEntry]) -> None:
        """Publish every entry; return once the bus has persisted them all (raise if any failed)."""
