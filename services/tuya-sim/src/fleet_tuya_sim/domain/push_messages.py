"""Domain events as Tuya push payloads (REFERENCE §3): the legacy family (protocol 4 and 20) and the IoT Core
family (1000, 1001, 1002). The plaintext built here is what the codec encrypts into `data`."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from fleet_contracts.tuya import PushProtocol
from fleet_tuya_sim.domain.events import (
    DeviceBound,
    DeviceRenamed,
    DeviceUnbound,
    DpRenamed,
    DpReported,
    Event,
    OtaProgressed,
    WentOffline,
    WentOnline,
)

PROTOCOL_STATUS = PushProtocol.STATUS
PROTOCOL_LEGACY = PushProtocol.LEGACY
PROTOCOL_DEVICE_REPORT = PushProtocol.DEVICE_REPORT
PROTOCOL_DEVICE_MANAGEMENT = PushProtocol.DEVICE_MANAGEMENT
PROTOCOL_OTA = PushProtocol.OTA


class MessageFamily(StrEnum):
    LEGACY = "legacy"  # 4 + 20
    IOT_CORE = "iot_core"  # 1000 + 1001 + 1002
    BOTH = "both"  # both families: Tuya's docs warn that this duplicates (1001 deviceOnline ~ 20 online)


@dataclass(frozen=True)
class PushPayload:
    protocol: int
    kind: str  # bizCode, or `statusReport` for protocol 4 (the typed message's `kind`)
    device_id: str  # the message key
    t: int  # envelope `t` (ms)
    data: dict[str, Any]


def payloads(event: Event, family: MessageFamily) -> list[PushPayload]:
    out: list[PushPayload] = []
    if family in (MessageFamily.LEGACY, MessageFamily.BOTH):
        legacy = _legacy(event)
        if legacy is not None:
            out.append(legacy)
    if family in (MessageFamily.IOT_CORE, MessageFamily.BOTH):
        iot = _iot_core(event)
        if iot is not None:
            out.append(iot)
    return out


def dp_string(value: object) -> str:
    """The value under the numeric DP id key of a protocol-4 item (`"1":"false"`, `"3":"52"`)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _legacy_biz(event: Event, biz_code: str, biz_data: dict[str, Any]) -> PushPayload:
    data = {
        "devId": event.device_id,
        "productKey": event.product_id,
        "bizCode": biz_code,
        "bizData": biz_data,
        "ts": event.t,
    }
    return PushPayload(PROTOCOL_LEGACY, biz_code, event.device_id, event.t, data)


def _legacy(event: Event) -> PushPayload | None:
    match event:
        case DpReported():
            status = [
                {"code": r.code, "value": r.value, "t": r.t, str(r.dp_id): dp_string(r.value)}
                for r in event.readings
            ]
            data = {
                "dataId": event.data_id,
                "devId": event.device_id,
                "productKey": event.product_id,
                "status": status,
            }
            return PushPayload(PROTOCOL_STATUS, "statusReport", event.device_id, event.t, data)
        case WentOnline():
            return _legacy_biz(event, "online", {"time": event.t, "uid": event.uid})
        case WentOffline():
            return _legacy_biz(event, "offline", {"time": event.t, "uid": event.uid})
        case DeviceBound():
            return _legacy_biz(
                event,
                "bindUser",
                {
                    "devId": event.device_id,
                    "uid": event.uid,
                    "ownerId": event.home_id,
                    "uuid": event.uuid,
                    "token": event.token,
                },
            )
        case DeviceUnbound():
            return _legacy_biz(
                event, "delete", {"devId": event.device_id, "uid": event.uid, "ownerId": event.home_id}
            )
        case DeviceRenamed():
            return _legacy_biz(
                event, "nameUpdate", {"devId": event.device_id, "uid": event.uid, "name": event.name}
            )
        case DpRenamed():
            return _legacy_biz(
                event, "dpNameUpdate", {"devId": event.device_id, "dpId": event.dp_id, "name": event.name}
            )
        case OtaProgressed():
            return _legacy_biz(
                event,
                "upgradeStatus",
                {
                    "devId": event.device_id,
                    "upgradeStatus": event.upgrade_status,
                    "description": event.description,
                    "moduleType": event.channel,
                },
            )
    return None


def _iot_biz(event: Event, protocol: int, biz_code: str, biz_data: dict[str, Any]) -> PushPayload:
    data = {
        "bizCode": biz_code,
        "bizData": {"devId": event.device_id, "productId": event.product_id, **biz_data},
        "ts": event.t,
    }
    return PushPayload(protocol, biz_code, event.device_id, event.t, data)


def _iot_core(event: Event) -> PushPayload | None:
    match event:
        case DpReported():
            properties = [
                {"code": r.code, "dpId": r.dp_id, "time": r.t, "value": r.value} for r in event.readings
            ]
            return _iot_biz(
                event,
                PROTOCOL_DEVICE_REPORT,
                "devicePropertyMessage",
                {"dataId": event.data_id, "properties": properties},
            )
        case WentOnline():
            return _iot_biz(
                event, PROTOCOL_DEVICE_MANAGEMENT, "deviceOnline", {"uid": event.uid, "time": event.t}
            )
        case WentOffline():
            return _iot_biz(
                event, PROTOCOL_DEVICE_MANAGEMENT, "deviceOffline", {"uid": event.uid, "time": event.t}
            )
        case DeviceBound():
            return _iot_biz(
                event,
                PROTOCOL_DEVICE_MANAGEMENT,
                "deviceBindSpace",
                {"uid": event.uid, "spaceId": event.home_id, "uuid": event.uuid, "token": event.token},
            )
        case DeviceUnbound():
            return _iot_biz(
                event,
                PROTOCOL_DEVICE_MANAGEMENT,
                "deviceUnbindSpace",
                {"uid": event.uid, "spaceId": event.home_id},
            )
        case DeviceRenamed():
            return _iot_biz(
                event,
                PROTOCOL_DEVICE_MANAGEMENT,
                "deviceNameUpdate",
                {"uid": event.uid, "name": event.name, "uuid": event.uuid},
            )
        case OtaProgressed():
            return _iot_biz(
                event,
                PROTOCOL_OTA,
                "deviceOtaProgress",
                {
                    "progress": event.progress,
                    "upgradeStatus": event.upgrade_status,
                    "channel": event.channel,
                    "version": event.version,
                    "description": event.description,
                },
            )
    return None
