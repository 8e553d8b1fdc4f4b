"""Tuya message -> contract event: one event per message, for every protocol and bizCode.

| Tuya message                                   | event                         |
|------------------------------------------------|-------------------------------|
| 4 status report                                | device.status.reported.v1     |
| 1000 devicePropertyMessage / deviceQuery...    | device.status.reported.v1     |
| 20 online, 1001 deviceOnline                   | device.online.v1              |
| 20 offline, 1001 deviceOffline                 | device.offline.v1             |
| 20 bindUser, 1001 deviceBindSpace              | device.bound.v1               |
| 1001 deviceUnbindSpace                         | device.unbound.v1             |
| 20 delete                                      | device.removed.v1             |
| 20 nameUpdate, 1001 deviceNameUpdate           | device.renamed.v1             |
| 20 dpNameUpdate                                | device.dp.renamed.v1          |
| 20 upgradeStatus, 1002 deviceOtaProgress       | device.ota.progressed.v1      |
| 20 deviceSignal                                | device.signal.reported.v1     |
| everything else (20 share, deviceDpCommand,    | device.tuya_message.unknown.v1|
|  user/home/room/scene/automation; 1000 event   |  (decrypted data carried raw) |
|  and action response; 1001 transfer, freeze,   |                               |
|  unfreeze; unknown protocols and bizCodes;     |                               |
|  reports without any DP or signal sample)      |                               |

The envelope is deterministic: id from the dedup key, time = Tuya's push time `t`, so a redelivered message
maps to the byte-identical event. A message that decodes but cannot form a valid event raises
`InvalidTuyaMessage` (dead-lettered with reason `contract`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ValidationError

from fleet_contracts import device as ev
from fleet_contracts.envelope import Envelope
from fleet_ingest.domain.model import InvalidTuyaMessage, Project
from fleet_shared.tuya import messages as tm
from fleet_shared.tuya.codec import DecodedMessage

#: Keys dropped from raw data carried in unknown events, at any depth: secrets must never be stored.
SECRET_KEYS = frozenset({"localkey", "local_key", "password", "passwd", "secret", "accesssecret", "pwd"})

# Below this a Tuya "time" is in seconds (the docs say Long without a unit; observed values are in ms).
_SECONDS_LIMIT = 100_000_000_000


def millis(value: int | None) -> int | None:
    if value is None or value < 0:
        return value
    return value * 1000 if value < _SECONDS_LIMIT else value


def push_time_ms(decoded: DecodedMessage, fallback_ms: int) -> int:
    """Tuya's push time `t`; the Pulsar publish time when the envelope has none."""
    return millis(decoded.t) or fallback_ms


def _biz_code(message: tm.TuyaMessage) -> str | None:
    # A field lookup, not getattr(): a pydantic model's missing attribute raises through its metaclass,
    # which cost more than the rest of the mapping of a protocol 4 report.
    value = message.__dict__.get("biz_code")
    return value if isinstance(value, str) else None


def _origin(decoded: DecodedMessage, push_ms: int, message_id: str | None) -> ev.TuyaOrigin:
    return ev.TuyaOrigin(
        protocol=decoded.protocol,
        biz_code=_biz_code(decoded.message),
        push_time_ms=push_ms,
        message_id=message_id,
    )


def _str(value: object) -> str | None:
    if value is None or value == "":
        return None
    return str(value)


def tuya_message_id(decoded: DecodedMessage) -> str | None:
    data = decoded.data
    for container in (data, data.get("bizData")):
        if isinstance(container, dict):
            for name in ("dataId", "uuid"):
                value = container.get(name)
                if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
                    return str(value)[:128]
    return None


def scrub(value: Any) -> Any:
    """A copy of `value` without secret-named keys (at any depth)."""
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items() if k.lower() not in SECRET_KEYS}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    return value


class _Ctx:
    """What every mapper needs: the decoded message, its push time, origin and the device-fact basics."""

    __slots__ = ("decoded", "origin", "push_ms")

    def __init__(self, decoded: DecodedMessage, push_ms: int) -> None:
        self.decoded = decoded
        self.push_ms = push_ms
        self.origin = _origin(decoded, push_ms, tuya_message_id(decoded))

    def fact(self, device_id: str, product_id: str | None) -> dict[str, Any]:
        return {"device_id": device_id, "product_id": product_id, "origin": self.origin}

    def device_time(self, *candidates: int | None) -> int:
        for candidate in candidates:
            if candidate is not None and candidate >= 0:
                return millis(candidate) or 0
        return self.push_ms


def _unknown(ctx: _Ctx) -> tuple[type[Envelope[Any]], BaseModel]:
    decoded = ctx.decoded
    return ev.UnknownTuyaMessageEvent, ev.UnknownTuyaMessage(
        device_id=decoded.device_id,
        protocol=decoded.protocol,
        biz_code=_biz_code(decoded.message),
        push_time_ms=ctx.push_ms,
        raw_data=scrub(decoded.data),
    )


Mapped = tuple[type[Envelope[Any]], BaseModel]


def _dps_from_status(ctx: _Ctx, items: list[tm.StatusItem]) -> list[ev.DpReport]:
    return [
        ev.DpReport(
            code=item.code, dp_id=item.dp_id, value=item.value, device_time_ms=ctx.device_time(item.t)
        )
        for item in items
    ]


def _dps_from_properties(ctx: _Ctx, items: list[tm.PropertyItem]) -> list[ev.DpReport]:
    return [
        ev.DpReport(
            code=item.code, dp_id=item.dp_id, value=item.value, device_time_ms=ctx.device_time(item.time)
        )
        for item in items
    ]


def _status_report(ctx: _Ctx, msg: tm.StatusReport) -> Mapped:
    if not msg.status:
        return _unknown(ctx)
    return ev.DeviceStatusReportedEvent, ev.DeviceStatusReported(
        **ctx.fact(msg.dev_id, msg.product_key), dps=_dps_from_status(ctx, msg.status)
    )


def _property_message(ctx: _Ctx, msg: tm.DevicePropertyMessage | tm.DeviceQueryPropertyMessage) -> Mapped:
    data = msg.biz_data
    if not data.properties:
        return _unknown(ctx)
    return ev.DeviceStatusReportedEvent, ev.DeviceStatusReported(
        **ctx.fact(data.dev_id, data.product_id), dps=_dps_from_properties(ctx, data.properties)
    )


def _online(ctx: _Ctx, msg: tm.DeviceOnline) -> Mapped:
    return ev.DeviceOnlineEvent, ev.DeviceOnline(
        **ctx.fact(msg.dev_id, msg.product_key),
        owner_uid=_str(msg.biz_data.uid),
        device_time_ms=ctx.device_time(msg.biz_data.time, msg.ts),
    )


def _offline(ctx: _Ctx, msg: tm.DeviceOffline) -> Mapped:
    return ev.DeviceOfflineEvent, ev.DeviceOffline(
        **ctx.fact(msg.dev_id, msg.product_key),
        owner_uid=_str(msg.biz_data.uid),
        device_time_ms=ctx.device_time(msg.biz_data.time, msg.ts),
    )


def _iot_online(ctx: _Ctx, msg: tm.IotDeviceOnline) -> Mapped:
    data = msg.biz_data
    return ev.DeviceOnlineEvent, ev.DeviceOnline(
        **ctx.fact(data.dev_id, data.product_id),
        owner_uid=_str(data.uid),
        device_time_ms=ctx.device_time(data.time, msg.ts),
    )


def _iot_offline(ctx: _Ctx, msg: tm.IotDeviceOffline) -> Mapped:
    data = msg.biz_data
    return ev.DeviceOfflineEvent, ev.DeviceOffline(
        **ctx.fact(data.dev_id, data.product_id),
        owner_uid=_str(data.uid),
        device_time_ms=ctx.device_time(data.time, msg.ts),
    )


def _name_update(ctx: _Ctx, msg: tm.DeviceNameUpdate) -> Mapped:
    return ev.DeviceRenamedEvent, ev.DeviceRenamed(
        **ctx.fact(msg.dev_id, msg.product_key), owner_uid=_str(msg.biz_data.uid), name=msg.biz_data.name
    )


def _iot_name_update(ctx: _Ctx, msg: tm.IotDeviceNameUpdate) -> Mapped:
    data = msg.biz_data
    return ev.DeviceRenamedEvent, ev.DeviceRenamed(
        **ctx.fact(data.dev_id, data.product_id), owner_uid=_str(data.uid), name=data.name
    )


def _dp_name_update(ctx: _Ctx, msg: tm.DpNameUpdate) -> Mapped:
    dp_id = msg.biz_data.dp_id
    if isinstance(dp_id, str) and dp_id.isdigit():
        dp_id = int(dp_id)
    return ev.DpRenamedEvent, ev.DpRenamed(
        **ctx.fact(msg.dev_id, msg.product_key), dp_id=dp_id, name=msg.biz_data.name
    )


def _bind_user(ctx: _Ctx, msg: tm.DeviceBindUser) -> Mapped:
    data = msg.biz_data
    return ev.DeviceBoundEvent, ev.DeviceBound(
        **ctx.fact(msg.dev_id, msg.product_key),
        owner_uid=data.uid,
        home_id=_str(data.owner_id),
        device_uuid=_str(data.uuid),
        pairing_token=_str(data.token),
    )


def _bind_space(ctx: _Ctx, msg: tm.IotDeviceBindSpace) -> Mapped:
    data = msg.biz_data
    return ev.DeviceBoundEvent, ev.DeviceBound(
        **ctx.fact(data.dev_id, data.product_id),
        owner_uid=data.uid,
        home_id=_str(data.space_id),
        device_uuid=_str(data.uuid),
        pairing_token=_str(data.token),
    )


def _unbind_space(ctx: _Ctx, msg: tm.IotDeviceUnbindSpace) -> Mapped:
    data = msg.biz_data
    return ev.DeviceUnboundEvent, ev.DeviceUnbound(
        **ctx.fact(data.dev_id, data.product_id), owner_uid=_str(data.uid), home_id=_str(data.space_id)
    )


def _delete(ctx: _Ctx, msg: tm.DeviceDelete) -> Mapped:
    data = msg.biz_data
    return ev.DeviceRemovedEvent, ev.DeviceRemoved(
        **ctx.fact(msg.dev_id, msg.product_key), owner_uid=_str(data.uid), home_id=_str(data.owner_id)
    )


def _upgrade_status(ctx: _Ctx, msg: tm.DeviceUpgradeStatus) -> Mapped:
    data = msg.biz_data
    return ev.DeviceOtaProgressedEvent, ev.DeviceOtaProgressed(
        **ctx.fact(msg.dev_id, msg.product_key),
        channel=data.module_type if data.module_type is not None else 0,
        upgrade_status=data.upgrade_status,
        description=data.description,
    )


def _ota_progress(ctx: _Ctx, msg: tm.IotDeviceOtaProgress) -> Mapped:
    data = msg.biz_data
    status = data.upgrade_status
    if status is None:
        # The layout is undocumented; a bare progress figure means the upgrade runs (or has just finished).
        status = ev.OtaUpgradeStatus.DONE if data.progress == 100 else ev.OtaUpgradeStatus.UPGRADING
    return ev.DeviceOtaProgressedEvent, ev.DeviceOtaProgressed(
        **ctx.fact(data.dev_id, data.product_id),
        channel=data.channel if data.channel is not None else 0,
        upgrade_status=status,
        progress_percent=data.progress,
        firmware_version=_str(data.version),
    )


def _signal(ctx: _Ctx, msg: tm.DeviceSignal) -> Mapped:
    if not msg.report_data:
        return _unknown(ctx)
    samples = [
        ev.SignalSample(rssi=s.rssi, memory=s.memory, device_time_ms=ctx.device_time(s.t, msg.ts))
        for s in msg.report_data
    ]
    return ev.DeviceSignalReportedEvent, ev.DeviceSignalReported(
        **ctx.fact(msg.dev_id, msg.product_key), samples=samples
    )


def _unknown_message(ctx: _Ctx, _msg: tm.TuyaMessage) -> Mapped:
    return _unknown(ctx)


_MAPPERS: dict[type[tm.TuyaMessage], Callable[[_Ctx, Any], Mapped]] = {
    tm.StatusReport: _status_report,
    tm.DevicePropertyMessage: _property_message,
    tm.DeviceQueryPropertyMessage: _property_message,
    tm.DeviceOnline: _online,
    tm.DeviceOffline: _offline,
    tm.IotDeviceOnline: _iot_online,
    tm.IotDeviceOffline: _iot_offline,
    tm.DeviceNameUpdate: _name_update,
    tm.IotDeviceNameUpdate: _iot_name_update,
    tm.DpNameUpdate: _dp_name_update,
    tm.DeviceBindUser: _bind_user,
    tm.IotDeviceBindSpace: _bind_space,
    tm.IotDeviceUnbindSpace: _unbind_space,
    tm.DeviceDelete: _delete,
    tm.DeviceUpgradeStatus: _upgrade_status,
    tm.IotDeviceOtaProgress: _ota_progress,
    tm.DeviceSignal: _signal,
}
"""Typed mappers; every other message class (and unknown ones) becomes an unknown-message event."""


def _validation_summary(exc: ValidationError) -> str:
    # Locations and error types only: pydantic's default text echoes input values (plaintext).
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '<root>'}:{err['type']}" for err in exc.errors()[:5]
    )


def to_event(
    decoded: DecodedMessage, *, project: Project, event_id: str, fallback_time_ms: int
) -> Envelope[Any]:
    """The contract event for one decoded Tuya message (raises `InvalidTuyaMessage`)."""
    push_ms = push_time_ms(decoded, fallback_time_ms)
    ctx = _Ctx(decoded, push_ms)
    mapper = _MAPPERS.get(type(decoded.message), _unknown_message)
    kind = decoded.message.kind
    try:
        envelope_cls, payload = mapper(ctx, decoded.message)
        event: Envelope[Any] = envelope_cls.build(
            payload,
            source=project.source,
            tenant=project.access_id,
            region=project.region,
            event_id=event_id,
            time=datetime.fromtimestamp(push_ms / 1000, UTC),
        )
        return event
    except ValidationError as exc:
        raise InvalidTuyaMessage(
            f"{decoded.protocol}/{kind} does not fit its event: {_validation_summary(exc)}"
        ) from None
    except (ValueError, OverflowError) as exc:  # e.g. a timestamp out of datetime's range
        raise InvalidTuyaMessage(f"{decoded.protocol}/{kind}: {type(exc).__name__}") from None
