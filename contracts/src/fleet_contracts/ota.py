"""Firmware catalog and staged releases, published by `ota`.

Topics: `topics.OTA_FIRMWARE_EVENTS` keyed by firmware id, `topics.OTA_RELEASE_EVENTS` keyed by release id
(device upgrade states of a release travel with the release so its progress is ordered as one stream).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import Field

from fleet_contracts._base import (
    DeviceId,
    FirmwareId,
    FirmwareVersion,
    OperatorId,
    Payload,
    ProductId,
    Reason,
    ReleaseId,
    UpgradeChannel,
)
from fleet_contracts.envelope import Envelope
from fleet_contracts.tuya import OtaUpgradeStatus
from fleet_contracts.tuya import UpgradeType as UpgradeType


class ReleaseStage(StrEnum):
    VERIFICATION = "verification"
    CANARY = "canary"
    FULL = "full"


class ReleaseOutcome(StrEnum):
    COMPLETED = "completed"
    STOPPED = "stopped"
    HALTED = "halted"


class DeviceUpgradeState(StrEnum):
    """Per-device state machine of an upgrade within a release."""

    PENDING = "pending"
    COMMANDED = "commanded"  # the upgrade command of an attempt is recorded (sent, or about to be)
    WAITING = "waiting"  # offline or sleeping: waits for the device
    UPGRADING = "upgrading"
    SUCCEEDED = "succeeded"  # only once the device reports the new version
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    RETRYING = "retrying"  # an attempt failed; the next one waits for its backoff


class FirmwareRegistered(Payload):
    """A firmware build was added to the catalog."""

    subject_field: ClassVar[str] = "firmware_id"

    firmware_id: FirmwareId
    product_id: ProductId
    channel: UpgradeChannel
    version: FirmwareVersion
    size_bytes: int = Field(gt=0, le=1 << 31, description="Firmware file size in bytes.")
    md5: str = Field(pattern=r"^[0-9a-f]{32}$", description="MD5 of the firmware file, lower-case hex.")
    signature: str = Field(
        min_length=1,
        max_length=512,
        description="HMAC/signature of the firmware file as Tuya expects it (`sign`).",
    )
    upgrade_type: UpgradeType
    registered_by: OperatorId


class ReleaseFact(Payload):
    subject_field: ClassVar[str] = "release_id"

    release_id: ReleaseId
    tuya_region: str | None = Field(
        default=None,
        min_length=1,
        max_length=16,
        description="Data-center region the fact is about; absent for the whole release.",
    )


class ReleaseStarted(ReleaseFact):
    """A release of a firmware began, in one data-center region, starting with its first stage."""

    firmware_id: FirmwareId
    product_id: ProductId
    channel: UpgradeChannel
    version: FirmwareVersion
    tuya_region: str = Field(
        min_length=1, max_length=16, description="Data-center region the release targets."
    )
    stage: ReleaseStage
    target_devices: int = Field(ge=0, description="Devices targeted by the first stage.")
    started_by: OperatorId


class ReleasePaused(ReleaseFact):
    paused_by: OperatorId
    reason: Reason | None = None


class ReleaseResumed(ReleaseFact):
    resumed_by: OperatorId


class ReleasePromoted(ReleaseFact):
    """The release moved to its next stage (automatically on the success threshold, or by an operator)."""

    from_stage: ReleaseStage
    to_stage: ReleaseStage
    automatic: bool
    promoted_by: OperatorId | None = Field(default=None, description="Operator, when not automatic.")
    success_rate: float | None = Field(default=None, ge=0, le=1, description="Success rate that allowed it.")
    sample_size: int | None = Field(default=None, ge=0)
    target_devices: int = Field(ge=0, description="Devices targeted by the new stage.")


class ReleaseHalted(ReleaseFact):
    """The release stopped sending upgrades: failure threshold crossed, or an operator halted it."""

    stage: ReleaseStage
    automatic: bool
    reason: Reason
    failure_rate: float | None = Field(default=None, ge=0, le=1)
    sample_size: int | None = Field(default=None, ge=0)


class ReleaseFinished(ReleaseFact):
    """No device of the release is pending any more."""

    outcome: ReleaseOutcome
    succeeded: int = Field(ge=0)
    failed: int = Field(ge=0)
    not_attempted: int = Field(
        ge=0, description="Devices never upgraded (stopped or halted before their turn)."
    )


class DeviceUpgradeStateChanged(ReleaseFact):
    """One device's upgrade within the release changed state."""

    device_id: DeviceId
    channel: UpgradeChannel
    previous_state: DeviceUpgradeState | None = Field(default=None, description="Absent for the first state.")
    state: DeviceUpgradeState
    stage: ReleaseStage | None = Field(
        default=None, description="Stage of the release the device belongs to."
    )
    attempt: int = Field(ge=1, description="Attempt number (retries increase it).")
    progress_percent: int | None = Field(default=None, ge=0, le=100)
    tuya_upgrade_status: OtaUpgradeStatus | None = Field(default=None, description="Latest Tuya status code.")
    reported_version: FirmwareVersion | None = Field(default=None, description="Version the device reports.")
    reason: Reason | None = None


class FirmwareRegisteredEvent(Envelope[FirmwareRegistered]):
    type: Literal["ota.firmware.registered.v1"] = "ota.firmware.registered.v1"


class ReleaseStartedEvent(Envelope[ReleaseStarted]):
    type: Literal["ota.release.started.v1"] = "ota.release.started.v1"


class ReleasePausedEvent(Envelope[ReleasePaused]):
    type: Literal["ota.release.paused.v1"] = "ota.release.paused.v1"


class ReleaseResumedEvent(Envelope[ReleaseResumed]):
    type: Literal["ota.release.resumed.v1"] = "ota.release.resumed.v1"


class ReleasePromotedEvent(Envelope[ReleasePromoted]):
    type: Literal["ota.release.promoted.v1"] = "ota.release.promoted.v1"


class ReleaseHaltedEvent(Envelope[ReleaseHalted]):
    type: Literal["ota.release.halted.v1"] = "ota.release.halted.v1"


class ReleaseFinishedEvent(Envelope[ReleaseFinished]):
    type: Literal["ota.release.finished.v1"] = "ota.release.finished.v1"


class DeviceUpgradeStateChangedEvent(Envelope[DeviceUpgradeStateChanged]):
    type: Literal["ota.device_upgrade.state_changed.v1"] = "ota.device_upgrade.state_changed.v1"


FirmwareEvent = Annotated[FirmwareRegisteredEvent, Field(discriminator="type")]
ReleaseEvent = Annotated[
    ReleaseStartedEvent
    | ReleasePausedEvent
    | ReleaseResumedEvent
    | ReleasePromotedEvent
    | ReleaseHaltedEvent
    | ReleaseFinishedEvent
    | DeviceUpgradeStateChangedEvent,
    Field(discriminator="type"),
]
