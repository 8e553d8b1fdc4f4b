"""What happened to a virtual device: pure facts, turned into Tuya push messages by the publisher side."""

from __future__ import annotations

from dataclasses import dataclass

from fleet_tuya_sim.domain.products import DpValue


@dataclass(frozen=True)
class DpReading:
    dp_id: int
    code: str
    value: DpValue
    t: int  # device timestamp, ms


@dataclass(frozen=True)
class DeviceEvent:
    device_id: str
    product_id: str
    t: int  # ms: device time for reports, cloud time for management events


@dataclass(frozen=True)
class DpReported(DeviceEvent):
    data_id: str
    readings: tuple[DpReading, ...]


@dataclass(frozen=True)
class WentOnline(DeviceEvent):
    uid: str | None


@dataclass(frozen=True)
class WentOffline(DeviceEvent):
    uid: str | None


@dataclass(frozen=True)
class DeviceBound(DeviceEvent):
    uid: str
    home_id: str
    uuid: str
    token: str  # the pairing token (never its secret)


@dataclass(frozen=True)
class DeviceUnbound(DeviceEvent):
    uid: str
    home_id: str
    reset: bool  # factory reset as well (DP values back to defaults)


@dataclass(frozen=True)
class DeviceRenamed(DeviceEvent):
    uid: str | None
    name: str
    uuid: str


@dataclass(frozen=True)
class DpRenamed(DeviceEvent):
    dp_id: int
    name: str


@dataclass(frozen=True)
class OtaProgressed(DeviceEvent):
    channel: int
    upgrade_status: int
    progress: int
    version: str  # the target version
    description: str


Event = (
    DpReported
    | WentOnline
    | WentOffline
    | DeviceBound
    | DeviceUnbound
    | DeviceRenamed
    | DpRenamed
    | OtaProgressed
)
