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
from fleet_ota.domain.targeting import DeviceRecord
from fleet_ota.domain.upgrade import DeviceUpgrade


@dataclass(frozen=True, slots=True)
class CountedEntry:
    """An outbox entry (the shared layout) and the progress counter delta it carries (applied exactly once).

    The event's id is deterministic (document id and version), so a relay that runs twice publishes the same
    id and applies the delta at most once (`ProgressRepository.apply`).
    """

    event: OutboxEntry
    counter_id: str | None = None
    delta: dict[str, int] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.event.id

    def to_document(self) -> dict[str, Any]:
        # stored entries are removed by exact equality: this is the one place that lays them out
        return {**self.event.to_document(), "counter": self.counter_id, "delta": self.delta}

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> CountedEntry:
        return cls(OutboxEntry.from_document(doc), doc.get("counter"), dict(doc.get("delta") or {}))


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


class UpgradeRepository(Protocol):
    async def insert_planned(self, upgrades: Sequence[DeviceUpgrade], batch: str) -> None:
        """Bulk-insert (duplicates ignored: re-planning is idempotent)."""

    async def batch_size(self, release_id: str, batch: str) -> int: ...

    async def device_ids(self, release_id: str, region: str) -> set[str]: ...

    async def count_in_stage(self, release_id: str, region: str, stage: ReleaseStage) -> int: ...

    async def get(self, upgrade_id: str) -> DeviceUpgrade | None: ...

    async def open_of_device(self, device_id: str) -> list[DeviceUpgrade]:
        """The device's upgrades that are not settled, any release."""

    async def save(
        self, upgrade: DeviceUpgrade, expected_version: int, outbox: Sequence[CountedEntry]
    ) -> bool: ...

    async def ready_to_command(
        self, release_id: str, region: str, batches: Sequence[str], now: datetime, limit: int
    ) -> list[DeviceUpgrade]:
        """Pending upgrades, and retrying ones whose backoff is over, of these (counted) batches."""

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
    async def intend_batch(self, release_id: str, region: str, stage: ReleaseStage, batch: str) -> None:
        """Record a batch before inserting it, so a crash before it is counted is noticed and repaired."""

    async def batches(self, release_id: str, region: str) -> tuple[set[str], list[tuple[ReleaseStage, str]]]:
        """The region's counted batches, and the intended ones not yet counted."""

    async def add_batch(
        self, release_id: str, region: str, stage: ReleaseStage, batch: str, count: int
    ) -> None:
        """Count a planned batch into `targeted` and `pending`, once per batch id."""

    async def counts(self, release_id: str, region: str, stage: ReleaseStage) -> StageCounts: ...

    async def of_release(self, release_id: str) -> dict[tuple[str, ReleaseStage], StageCounts]: ...


class DeviceDirectory(Protocol):
    """ota's own record of devices (fed by status's events and the OpenAPI)."""

    async def candidates(self, product_id: str, region: str, channel: int, below: str) -> list[DeviceRecord]:
        """The product's devices in the region whose channel runs a version lower than `below`."""

    async def record(self, device: DeviceRecord) -> None: ...

    async def record_many(self, devices: Sequence[DeviceRecord]) -> None: ...


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


class EventPublisher(Protocol):
    async def publish(self, entries: Sequence[OutboxEntry]) -> None:
        """Publish every entry; return once the bus has persisted them all (raise if any failed)."""
