"""What status learns, as the facts the shadow merges: device events (the contract) and the cloud's view of a
device (reconciliation). Events status does not keep map to nothing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fleet_contracts import device
from fleet_status.domain.shadow import (
    BindingReport,
    BindingState,
    DeviceFacts,
    DpNameReport,
    DpReading,
    Fact,
    FirmwareReport,
    NameReport,
    PresenceReport,
    StatusReport,
)


def facts_from_event(event: device.DeviceEvent) -> DeviceFacts | None:
    """The facts an event carries about its device; None for events that do not touch a shadow."""
    data = event.data
    if isinstance(data, device.UnknownTuyaMessage):
        return None
    facts: tuple[Fact, ...]
    push_time = data.origin.push_time_ms
    match data:
        case device.DeviceStatusReported(dps=dps):
            readings = tuple(DpReading(dp.code, dp.value, dp.device_time_ms, dp.dp_id) for dp in dps)
            facts = (StatusReport(readings),)
        case device.DeviceOnline(device_time_ms=t):
            facts = (PresenceReport(True, t),)
        case device.DeviceOffline(device_time_ms=t):
            facts = (PresenceReport(False, t),)
        case device.DeviceBound():
            facts = (BindingReport(BindingState.BOUND, push_time, data.owner_uid, data.home_id),)
        case device.DeviceUnbound():
            facts = (BindingReport(BindingState.UNBOUND, push_time, data.owner_uid, data.home_id),)
        case device.DeviceRemoved():
            facts = (BindingReport(BindingState.REMOVED, push_time, data.owner_uid, data.home_id),)
        case device.DeviceRenamed(name=name):
            facts = (NameReport(name, push_time),)
        case device.DpRenamed(dp_id=dp_id, name=name):
            facts = (DpNameReport(dp_id, name, push_time),)
        case device.DeviceOtaProgressed():
            facts = (
                FirmwareReport(
                    channel=data.channel,
                    upgrade_status=int(data.upgrade_status),
                    push_time_ms=push_time,
                    progress_percent=data.progress_percent,
                    description=data.description,
                    version=data.firmware_version,
                ),
            )
        case _:
            return None  # signal samples: not part of the shadow
    return DeviceFacts(device_id=data.device_id, facts=facts, product_id=data.product_id)


@dataclass(frozen=True, slots=True)
class CloudDevice:
    """What the cloud says about a device now; `exists=False` when the cloud no longer has it."""

    device_id: str
    exists: bool
    fetched_at_ms: int
    product_id: str | None = None
    online: bool | None = None
    owner_uid: str | None = None
    home_id: str | None = None
    name: str | None = None
    status: tuple[tuple[str, Any], ...] = ()


def facts_from_cloud(cloud: CloudDevice) -> DeviceFacts:
    """The cloud's current view as facts timed at the moment it was asked (older device reports lose)."""
    t = cloud.fetched_at_ms
    if not cloud.exists:
        return DeviceFacts(cloud.device_id, (BindingReport(BindingState.REMOVED, t),))
    facts: list[Fact] = []
    if cloud.status:
        facts.append(
            StatusReport(tuple(DpReading(code, value, t) for code, value in cloud.status), source="cloud")
        )
    if cloud.online is not None:
        facts.append(PresenceReport(cloud.online, t, source="cloud"))
    if cloud.name:
        facts.append(NameReport(cloud.name, t))
    return DeviceFacts(cloud.device_id, tuple(facts), product_id=cloud.product_id)
