"""Tuya's OpenAPI subset at the real paths (REFERENCE §4-7). Thin: every call passes the gate (signature,
token, rate), then one simulator/fleet call; answers use Tuya's envelope, errors included (HTTP 200)."""

from __future__ import annotations

import secrets
import uuid
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from fleet_contracts.tuya import OtaUpgradeStatus, channel_name
from fleet_tuya_sim.domain import errors
from fleet_tuya_sim.domain.device import Device
from fleet_tuya_sim.domain.errors import CloudRefusal
from fleet_tuya_sim.domain.fleet import ChannelFirmware, Fleet
from fleet_tuya_sim.domain.products import DpSchema
from fleet_tuya_sim.service_layer.gate import Caller, OpenApiGate
from fleet_tuya_sim.service_layer.simulator import Simulator

MAX_BATCH = 20
PAIRING_TYPES = ("EZ", "AP", "BLE")
GRANT_TYPE_INVALID = 1003
PARAM_EMPTY = 1100
PARAM_RANGE = 1101
URI_PATH_INVALID = 1108

router = APIRouter()


class TuyaResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def envelope_ok(result: Any, now_ms: int) -> TuyaResponse:
    return TuyaResponse({"success": True, "result": result, "t": now_ms, "tid": uuid.uuid4().hex})


def envelope_error(code: int, msg: str, now_ms: int) -> TuyaResponse:
    return TuyaResponse({"success": False, "code": code, "msg": msg, "t": now_ms, "tid": uuid.uuid4().hex})


def _sim(request: Request) -> Simulator:
    sim: Simulator = request.app.state.simulator
    return sim


async def _caller(request: Request, *, token_api: bool = False) -> Caller:
    gate: OpenApiGate = request.app.state.gate
    body = await request.body()
    return gate.check(
        method=request.method,
        path=request.url.path,
        query=request.query_params.multi_items(),
        headers=dict(request.headers),
        body=body,
        token_api=token_api,
    )


async def _fleet_for(request: Request) -> Fleet:
    """The fleet, for a caller of the fleet's own project (another project gets 1106)."""
    caller = await _caller(request)
    sim = _sim(request)
    if caller.access_id != sim.options.access_id:
        raise CloudRefusal(errors.PERMISSION_DENY, "permission deny")
    return sim.fleet


def _ok(request: Request, result: Any) -> TuyaResponse:
    return envelope_ok(result, _sim(request).now_ms())


def _ids(raw: str | None) -> list[str]:
    ids = [i for i in (raw or "").split(",") if i]
    if not ids:
        raise CloudRefusal(PARAM_EMPTY, "param is empty: device_ids")
    if len(ids) > MAX_BATCH:
        raise CloudRefusal(PARAM_RANGE, f"param out of range: at most {MAX_BATCH} device ids")
    return ids


# -- views -------------------------------------------------------------------------------------------


def _status(fleet: Fleet, device: Device) -> list[dict[str, Any]]:
    return [{"code": dp.code, "value": device.dps[dp.code].value} for dp in fleet.product_of(device).dps]


def device_v1(fleet: Fleet, device: Device) -> dict[str, Any]:
    product = fleet.product_of(device)
    return {
        "id": device.device_id,
        "uuid": device.uuid,
        "uid": device.uid,
        "biz_type": 0,
        "name": device.name,
        "time_zone": device.time_zone,
        "ip": device.ip,
        "local_key": device.local_key,
        "sub": False,
        "model": product.model,
        "create_time": device.create_time,
        "update_time": device.update_time,
        "active_time": device.active_time,
        "status": _status(fleet, device),
        "owner_id": device.home_id,
        "product_id": product.product_id,
        "product_name": product.name,
        "category": product.category,
        "icon": product.icon,
        "online": device.online,
        "lat": "",
        "lon": "",
    }


def thing_v2(fleet: Fleet, device: Device) -> dict[str, Any]:
    product = fleet.product_of(device)
    return {
        "id": device.device_id,
        "active_time": device.active_time,
        "category": product.category,
        "create_time": device.create_time,
        "update_time": device.update_time,
        "custom_name": device.name,
        "icon": product.icon,
        "ip": device.ip,
        "is_online": device.online,
        "lat": "",
        "local_key": device.local_key,
        "lon": "",
        "name": device.name,
        "product_id": product.product_id,
        "product_name": product.name,
        "sub": False,
        "time_zone": device.time_zone,
        "uuid": device.uuid,
    }


def _spec_entry(dp: DpSchema, with_dp_id: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {"code": dp.code, "type": dp.type.value, "values": dp.values_json()}
    if with_dp_id:
        entry["dp_id"] = dp.dp_id
    return entry


def firmware_entry(device: Device, fw: ChannelFirmware) -> dict[str, Any]:
    release = fw.release
    status = fw.upgrade_status
    return {
        "upgrade_status": int(status),
        "current_version": fw.current_version,
        "version": fw.target_version,
        "desc": release.desc if release else "",
        "upgrading_desc": "upgrading",
        "downloading_desc": "downloading",
        "waiting_desc": "waiting for the device to wake up" if device.low_power else "",
        "dev_type": 1 if device.low_power else 0,
        "timeout": release.timeout_s if release else 0,
        "upgrade_type": release.upgrade_type if release else 0,
        "type": fw.channel,
        "type_desc": channel_name(fw.channel),
        "url": f"https://sim.invalid/firmware/{device.product_id}/{fw.channel}/{fw.target_version}.bin",
        "md5": release.md5 if release else "",
        "sign": "",
        "file_size": str(release.file_size) if release else "0",
        "last_upgrade_time": (fw.job.finished_ms or 0) if fw.job else 0,
        "firmware_deploy_time": 0,
        "control_type": 0,
        "can_upgrade": status in (OtaUpgradeStatus.READY, OtaUpgradeStatus.FAILED, OtaUpgradeStatus.TIMED_OUT)
        or (status is OtaUpgradeStatus.DONE and fw.target_version != fw.current_version),
        "remind": None,
    }


# -- token ---------------------------------------------------------------------------------------------


def _grant_result(access_token: str, refresh_token: str, lifetime_s: int, uid: str) -> dict[str, Any]:
    return {
        "access_token": access_token,
        "refresh_token": refresh_token,
        "expire_time": lifetime_s,
        "uid": uid,
    }


@router.get("/v1.0/token")
async def get_token(request: Request, grant_type: str = "") -> TuyaResponse:
    caller = await _caller(request, token_api=True)
    if grant_type != "1":
        raise CloudRefusal(GRANT_TYPE_INVALID, "grant type invalid")
    gate: OpenApiGate = request.app.state.gate
    grant = gate.access.grant(
        caller.access_id, secrets.token_hex(16), secrets.token_hex(16), _sim(request).now_ms()
    )
    return _ok(request, _grant_result(grant.access_token, grant.refresh_token, grant.lifetime_s, grant.uid))


@router.get("/v1.0/token/{refresh_token}")
async def refresh_token(request: Request, refresh_token: str) -> TuyaResponse:
    caller = await _caller(request, token_api=True)
    gate: OpenApiGate = request.app.state.gate
    grant = gate.access.refresh(
        caller.access_id, refresh_token, secrets.token_hex(16), secrets.token_hex(16), _sim(request).now_ms()
    )
    return _ok(request, _grant_result(grant.access_token, grant.refresh_token, grant.lifetime_s, grant.uid))


# -- devices -------------------------------------------------------------------------------------------


@router.get("/v1.0/devices/{device_id}")
async def get_device(request: Request, device_id: str) -> TuyaResponse:
    fleet = await _fleet_for(request)
    return _ok(request, device_v1(fleet, fleet.device(device_id)))


@router.get("/v1.0/users/{uid}/devices")
async def get_user_devices(request: Request, uid: str) -> TuyaResponse:
    fleet = await _fleet_for(request)
    return _ok(request, [device_v1(fleet, d) for d in fleet.devices.values() if d.uid == uid])


@router.get("/v2.0/cloud/thing/batch")
async def get_things(request: Request, device_ids: str = "") -> TuyaResponse:
    fleet = await _fleet_for(request)
    ids = _ids(device_ids)
    found = [fleet.devices[i] for i in ids if i in fleet.devices and fleet.devices[i].bound]
    return _ok(request, [thing_v2(fleet, d) for d in found])


@router.get("/v2.0/cloud/thing/{device_id}")
async def get_thing(request: Request, device_id: str) -> TuyaResponse:
    fleet = await _fleet_for(request)
    return _ok(request, thing_v2(fleet, fleet.device(device_id)))


@router.get("/v1.0/devices/{device_id}/status")
async def get_status(request: Request, device_id: str) -> TuyaResponse:
    fleet = await _fleet_for(request)
    return _ok(request, _status(fleet, fleet.device(device_id)))


@router.get("/v1.0/iot-03/devices/status")
async def get_statuses(request: Request, device_ids: str = "") -> TuyaResponse:
    fleet = await _fleet_for(request)
    ids = _ids(device_ids)
    found = [fleet.devices[i] for i in ids if i in fleet.devices and fleet.devices[i].bound]
    return _ok(request, [{"id": d.device_id, "status": _status(fleet, d)} for d in found])


@router.get("/{version}/devices/{device_id}/specifications")
async def get_specifications(request: Request, version: str, device_id: str) -> TuyaResponse:
    if version not in ("v1.0", "v1.1"):
        raise CloudRefusal(URI_PATH_INVALID, "uri path invalid")
    fleet = await _fleet_for(request)
    device = fleet.device(device_id)
    product = fleet.product_of(device)
    with_ids = version == "v1.1"
    return _ok(
        request,
        {
            "category": product.category,
            "functions": [_spec_entry(dp, with_ids) for dp in product.dps if dp.mode == "rw"],
            "status": [_spec_entry(dp, with_ids) for dp in product.dps],
        },
    )


@router.get("/v1.0/devices/{device_id}/functions")
async def get_functions(request: Request, device_id: str) -> TuyaResponse:
    fleet = await _fleet_for(request)
    product = fleet.product_of(fleet.device(device_id))
    functions = [
        {**_spec_entry(dp, False), "name": dp.name, "desc": dp.name} for dp in product.dps if dp.mode == "rw"
    ]
    return _ok(request, {"category": product.category, "functions": functions})


@router.get("/v1.0/devices/{device_id}/logs")
async def get_logs(
    request: Request,
    device_id: str,
    type: str = "",
    start_time: int = 0,
    end_time: int = 0,
    codes: str = "",
    size: int = 20,
    start_row_key: str = "",
) -> TuyaResponse:
    fleet = await _fleet_for(request)
    device = fleet.device(device_id)
    try:
        types = {int(t) for t in type.split(",") if t}
    except ValueError:
        raise CloudRefusal(errors.PARAM_ILLEGAL, "param illegal: type") from None
    if not types:
        raise CloudRefusal(PARAM_EMPTY, "param is empty: type")
    wanted_codes = {c for c in codes.split(",") if c}
    end = end_time or fleet_now(request)
    entries = [
        e
        for e in reversed(device.logs)  # newest first
        if e.event_id in types
        and start_time <= e.event_time <= end
        and (not wanted_codes or e.code in wanted_codes)
    ]
    offset = int(start_row_key) if start_row_key.isdigit() else 0
    size = max(1, min(size, 100))
    page = entries[offset : offset + size]
    has_next = offset + size < len(entries)
    logs = [
        {
            "code": e.code,
            "value": e.value,
            "event_time": e.event_time,
            "event_id": e.event_id,
            "event_from": e.event_from,
            "status": "1",
        }
        for e in page
    ]
    return _ok(
        request,
        {
            "device_id": device_id,
            "logs": logs,
            "has_next": has_next,
            "current_row_key": str(offset),
            "next_row_key": str(offset + size) if has_next else "",
        },
    )


def fleet_now(request: Request) -> int:
    return _sim(request).now_ms()


# -- pairing -------------------------------------------------------------------------------------------


def _extension_uuid(body: dict[str, Any]) -> str | None:
    """A BLE token's device: `extension.uuid` (Tuya requires it for BLE)."""
    extension = body.get("extension")
    uuid = extension.get("uuid") if isinstance(extension, dict) else None
    return str(uuid) if uuid else None


@router.post("/v1.0/device/paring/token")
async def create_pairing_token(request: Request) -> TuyaResponse:
    await _fleet_for(request)
    try:
        body = orjson.loads(await request.body() or b"{}")
    except orjson.JSONDecodeError:
        raise CloudRefusal(errors.PARAM_ILLEGAL, "param illegal: body is not JSON") from None
    if not isinstance(body, dict):
        raise CloudRefusal(errors.PARAM_ILLEGAL, "param illegal: body")
    pairing_type = str(body.get("paring_type") or body.get("pairing_type") or "")
    uid = str(body.get("uid") or "")
    if not pairing_type or not uid or not body.get("time_zone_id"):
        raise CloudRefusal(PARAM_EMPTY, "param is empty: paring_type, uid and time_zone_id are required")
    if pairing_type not in PAIRING_TYPES:
        raise CloudRefusal(errors.PARAM_ILLEGAL, "param illegal: paring_type")
    token = _sim(request).issue_pairing_token(
        uid=uid,
        home_id=str(body["home_id"]) if body.get("home_id") else None,
        pairing_type=pairing_type,
        time_zone_id=str(body["time_zone_id"]),
        device_uuid=_extension_uuid(body),
    )
    return _ok(
        request,
        {
            "region": token.region,
            "token": token.token,
            "secret": token.secret,
            "expire_time": token.lifetime_s,
        },
    )


@router.get("/v1.0/device/paring/tokens/{token}")
async def get_pairing_result(request: Request, token: str) -> TuyaResponse:
    fleet = await _fleet_for(request)
    return _ok(request, fleet.pairing_result(token).result())


# -- removal -------------------------------------------------------------------------------------------


@router.delete("/v1.0/devices/{device_id}")
async def remove_device_v1(request: Request, device_id: str) -> TuyaResponse:
    await _fleet_for(request)
    _sim(request).unbind(device_id, reset=False)
    return _ok(request, True)


@router.delete("/v2.0/cloud/thing/{device_id}")
async def remove_thing(request: Request, device_id: str) -> TuyaResponse:
    await _fleet_for(request)
    _sim(request).unbind(device_id, reset=False)
    return _ok(request, True)


@router.put("/v1.0/devices/{device_id}/reset-factory")
async def reset_factory_v1(request: Request, device_id: str) -> TuyaResponse:
    await _fleet_for(request)
    _sim(request).unbind(device_id, reset=True)
    return _ok(request, True)


@router.post("/v2.0/cloud/thing/{device_id}/reset")
async def reset_thing(request: Request, device_id: str) -> TuyaResponse:
    await _fleet_for(request)
    _sim(request).unbind(device_id, reset=True)
    return _ok(request, True)


# -- OTA -----------------------------------------------------------------------------------------------


@router.get("/v2.0/cloud/thing/{device_id}/firmware")
async def get_firmware(request: Request, device_id: str) -> TuyaResponse:
    fleet = await _fleet_for(request)
    device = fleet.device(device_id)
    return _ok(request, [firmware_entry(device, fw) for fw in fleet.firmware(device_id)])


@router.post("/v2.0/cloud/thing/{device_id}/firmware/{channel}")
async def confirm_upgrade(request: Request, device_id: str, channel: int) -> TuyaResponse:
    await _fleet_for(request)
    _sim(request).start_upgrade(device_id, channel)
    return _ok(request, True)


@router.get("/v2.0/cloud/thing/{device_id}/firmware/{channel}/progress")
async def get_upgrade_progress(request: Request, device_id: str, channel: int) -> TuyaResponse:
    fleet = await _fleet_for(request)
    for fw in fleet.firmware(device_id):
        if fw.channel == channel:
            progress = fw.job.progress if fw.job else 0
            return _ok(request, {"progress": progress, "upgrade_status": int(fw.upgrade_status)})
    raise CloudRefusal(errors.NOT_SUPPORTED, f"channel {channel} not supported by this device")
