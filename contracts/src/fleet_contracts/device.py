"""Device facts learned from Tuya's message push stream: `ingest` maps every Tuya message to one of these.

Topic: `topics.DEVICE_EVENTS`, keyed by device id. Each event carries its Tuya origin (protocol, bizCode,
push time, message ids) so consumers can de-duplicate the legacy and IoT Core copies of the same fact.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, JsonValue

from fleet_contracts._base import (
    Contract,
    DeviceId,
    DeviceTimeMillis,
    DpCode,
    DpId,
    DpValue,
    EpochMillis,
    FirmwareVersion,
    HomeId,
    Name,
    OwnerUid,
    Payload,
    ProductId,
    UpgradeChannel,
)
from fleet_contracts.envelope import Envelope

# Tuya's vocabulary, re-exported: events here carry it
from fleet_contracts.tuya import OtaUpgradeStatus as OtaUpgradeStatus


class TuyaOrigin(Contract):
    """Where in Tuya's stream a fact came from."""

    protocol: int = Field(
        ge=0, description="Tuya message `protocol`: 4, 20 (legacy) or 1000, 1001, 1002 (IoT Core)."
    )
    biz_code: str | None = Field(
        default=None, max_length=64, description="Tuya `bizCode`; absent for protocol 4 status reports."
    )
    push_time_ms: EpochMillis = Field(description="Outer `t` of the Tuya message (Tuya's push time, ms).")
    message_id: str | None = Field(
        default=None,
        max_length=128,
        description="Tuya's id of the message when it has one (`dataId`, `uuid`); helps de-duplication.",
    )


class DeviceFact(Payload):
    """Common fields of every device event."""

    subject_field: ClassVar[str] = "device_id"

    device_id: DeviceId
    product_id: ProductId | None = Field(
        default=None, description="Tuya product id (PID) when the message carries it."
    )
    origin: TuyaOrigin


class DpReport(Contract):
    """One data point in a status report."""

    code: DpCode
    dp_id: DpId | None = Field(default=None, description="Numeric DP id when Tuya sends it.")
    value: DpValue
    device_time_ms: DeviceTimeMillis = Field(description="Device timestamp of this DP value (`t` / `time`).")


class DeviceStatusReported(DeviceFact):
    """The device reported DP values (protocol 4; 1000 `devicePropertyMessage` and the query variant)."""

    dps: list[DpReport] = Field(
        min_length=1, max_length=255, description="Reported DP values, in message order."
    )


class DeviceOnline(DeviceFact):
    """The device connected to Tuya's cloud (20 `online`, 1001 `deviceOnline`)."""

    owner_uid: OwnerUid | None = None
    device_time_ms: DeviceTimeMillis = Field(description="When the device came online (`time`).")


class DeviceOffline(DeviceFact):
    """The device disconnected from Tuya's cloud (20 `offline`, 1001 `deviceOffline`)."""

    owner_uid: OwnerUid | None = None
    device_time_ms: DeviceTimeMillis = Field(description="When the device went offline (`time`).")


class DeviceBound(DeviceFact):
    """The device was bound to an owner and home (20 `bindUser`, 1001 `deviceBindSpace`)."""

    owner_uid: OwnerUid
    home_id: HomeId | None = None
    device_uuid: str | None = Field(
        default=None, max_length=64, description="Hardware uuid of the device (`uuid`)."
    )
    pairing_token: str | None = Field(
        default=None,
        max_length=64,
        description="Pairing token the device used (`token`), never the secret; links the bind to a session.",
    )


class DeviceUnbound(DeviceFact):
    """The device left its home/space (1001 `deviceUnbindSpace`)."""

    owner_uid: OwnerUid | None = None
    home_id: HomeId | None = None


class DeviceRemoved(DeviceFact):
    """The device was removed from its owner's account (20 `delete`)."""

    owner_uid: OwnerUid | None = None
    home_id: HomeId | None = None


class DeviceRenamed(DeviceFact):
    """The device got a new display name (20 `nameUpdate`, 1001 `deviceNameUpdate`)."""

    owner_uid: OwnerUid | None = None
    name: Name


class DpRenamed(DeviceFact):
    """A data point of the device got a new display name (20 `dpNameUpdate`)."""

    dp_id: DpId
    name: Name


class DeviceOtaProgressed(DeviceFact):
    """Progress of a firmware upgrade on one channel (20 `upgradeStatus`, 1002 `deviceOtaProgress`)."""

    channel: UpgradeChannel
    upgrade_status: OtaUpgradeStatus = Field(description="Tuya upgrade status code.")
    progress_percent: int | None = Field(
        default=None, ge=0, le=100, description="Progress in percent, if sent."
    )
    description: str | None = Field(
        default=None, max_length=1024, description="Tuya's `description`, if sent."
    )
    firmware_version: FirmwareVersion | None = Field(
        default=None,
        description="Version the channel runs (after a finished upgrade: the new one), when the message says.",  # noqa: E501 - schema text
    )


class SignalSample(Contract):
    """One signal sample of a `deviceSignal` report."""

    rssi: int | None = Field(default=None, ge=-200, le=50, description="Received signal strength (dBm).")
    memory: int | None = Field(default=None, ge=0, description="Free memory reported by the device (bytes).")
    device_time_ms: DeviceTimeMillis


class DeviceSignalReported(DeviceFact):
    """Signal/health samples reported by the device (20 `deviceSignal`)."""

    samples: list[SignalSample] = Field(min_length=1, max_length=255)


class UnknownTuyaMessage(Payload):
    """A Tuya message ingest decoded but has no typed event for (yet): carried raw so nothing is dropped."""

    subject_field: ClassVar[str] = "device_id"

    device_id: DeviceId | None = Field(default=None, description="Device id if the message names one.")
    protocol: int = Field(ge=0, description="Tuya message `protocol`.")
    biz_code: str | None = Field(default=None, max_length=64, description="Tuya `bizCode`, if any.")
    push_time_ms: EpochMillis = Field(description="Outer `t` of the Tuya message.")
    raw_data: JsonValue = Field(description="The decrypted `data` JSON, unchanged.")


# Envelopes: one class per event type; `type` is the discriminator.


class DeviceStatusReportedEvent(Envelope[DeviceStatusReported]):
    type: Literal["device.status.reported.v1"] = "device.status.reported.v1"


class DeviceOnlineEvent(Envelope[DeviceOnline]):
    type: Literal["device.online.v1"] = "device.online.v1"


class DeviceOfflineEvent(Envelope[DeviceOffline]):
    type: Literal["device.offline.v1"] = "device.offline.v1"


class DeviceBoundEvent(Envelope[DeviceBound]):
    type: Literal["device.bound.v1"] = "device.bound.v1"


class DeviceUnboundEvent(Envelope[DeviceUnbound]):
    type: Literal["device.unbound.v1"] = "device.unbound.v1"


class DeviceRemovedEvent(Envelope[DeviceRemoved]):
    type: Literal["device.removed.v1"] = "device.removed.v1"


class DeviceRenamedEvent(Envelope[DeviceRenamed]):
    type: Literal["device.renamed.v1"] = "device.renamed.v1"


class DpRenamedEvent(Envelope[DpRenamed]):
    type: Literal["device.dp.renamed.v1"] = "device.dp.renamed.v1"


class DeviceOtaProgressedEvent(Envelope[DeviceOtaProgressed]):
    type: Literal["device.ota.progressed.v1"] = "device.ota.progressed.v1"


class DeviceSignalReportedEvent(Envelope[DeviceSignalReported]):
    type: Literal["device.signal.reported.v1"] = "device.signal.reported.v1"


class UnknownTuyaMessageEvent(Envelope[UnknownTuyaMessage]):
    type: Literal["device.tuya_message.unknown.v1"] = "device.tuya_message.unknown.v1"


DeviceEvent = Annotated[
    DeviceStatusReportedEvent
    | DeviceOnlineEvent
    | DeviceOfflineEvent
    | DeviceBoundEvent
    | DeviceUnboundEvent
    | DeviceRemovedEvent
    | DeviceRenamedEvent
    | DpRenamedEvent
    | DeviceOtaProgressedEvent
    | DeviceSignalReportedEvent
    | UnknownTuyaMessageEvent,
    Field(discriminator="type"),
]
"""Every event on `topics.DEVICE_EVENTS`: validate with `TypeAdapter(DeviceEvent)`/`DEVICE_EVENTS.decode`."""
