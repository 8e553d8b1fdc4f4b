"""The OpenAPI routes Tuya's own Python clients call beyond what tuya-fleet itself uses (issue 16):
tinytuya's `Cloud` (project device list, iot-03 per-device status/functions/specification/commands,
factory-infos), tuya-iot-py-sdk (app-user login, legacy commands) and the IoT Core shadow. Thin like
`openapi`: the gate, then one fleet/simulator call, answers in Tuya's envelope; shared views come from there.

Not simulated: the MQTT open hub (`.../open-hub/access-config`): the sim has no MQTT broker, its message push
runs over Pulsar like Tuya's message service; those routes answer Tuya's "API not subscribed" error.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from typing import Any

import orjson
from fastapi import APIRouter, Request

from fleet_tuya_sim.domain import errors
from fleet_tuya_sim.domain.app_users import LinkedApp
from fleet_tuya_sim.domain.device import Device
from fleet_tuya_sim.domain.errors import CloudRefusal
from fleet_tuya_sim.domain.fleet import Fleet
from fleet_tuya_sim.entrypoints import openapi
from fleet_tuya_sim.entrypoints.openapi import TuyaResponse, device_v1
from fleet_tuya_sim.service_layer.device_control import send_commands
from fleet_tuya_sim.service_layer.gate import OpenApiGate

API_NOT_SUBSCRIBED = 28841105
MAX_PAGE = 100
MAX_FACTORY_INFOS = 50

router = APIRouter()


async def _json_body(request: Request) -> object:
    try:
        return orjson.loads(await request.body() or b"{}")
    except orjson.JSONDecodeError:
        raise CloudRefusal(errors.PARAM_ILLEGAL, "param illegal: body is not JSON") from None


def _page(devices: Iterable[Device], size: int, last_row_key: str) -> tuple[list[Device], bool, str]:
    """Devices in id order after `last_row_key`: (page, has_more, the key of the page's last device)."""
    size = max(1, min(size, MAX_PAGE))
    after = sorted((d for d in devices if d.device_id > last_row_key), key=lambda d: d.device_id)
    page = after[:size]
    return page, len(after) > size, page[-1].device_id if page else last_row_key


def _bound(fleet: Fleet) -> list[Device]:
    return [d for d in fleet.devices.values() if d.bound]


# -- app-user login (tuya-iot-py-sdk `TuyaOpenAPI.connect`) ----------------------------------------------


@router.post("/v1.0/iot-01/associated-users/actions/authorized-login")
async def authorized_login(request: Request) -> TuyaResponse:
    caller = await openapi._caller(request, token_api=True)
    sim = openapi._sim(request)
    if caller.access_id != sim.options.access_id:
        raise CloudRefusal(errors.PERMISSION_DENY, "permission deny")
    linked_app: LinkedApp = request.app.state.linked_app
    uid = linked_app.login(sim.fleet.owners(), await _json_body(request))
    gate: OpenApiGate = request.app.state.gate
    grant = gate.access.grant(
        caller.access_id, secrets.token_hex(16), secrets.token_hex(16), sim.now_ms(), uid=uid
    )
    result = {
        "access_token": grant.access_token,
        "refresh_token": grant.refresh_token,
        "expire_time": grant.lifetime_s,
        "uid": grant.uid,
        "platform_url": str(request.base_url).rstrip("/"),
    }
    return openapi._ok(request, result)


# -- device lists --------------------------------------------------------------------------------------


@router.get("/v1.0/iot-01/associated-users/devices")
async def get_associated_users_devices(
    request: Request, size: int = 20, last_row_key: str = ""
) -> TuyaResponse:
    """Every device bound to an app user of the project, in pages (tinytuya `getdevices()`)."""
    fleet = await openapi._fleet_for(request)
    bound = _bound(fleet)
    page, has_more, key = _page(bound, size, last_row_key)
    return openapi._ok(
        request,
        {
            "devices": [device_v1(fleet, d) for d in page],
            "has_more": has_more,
            "last_row_key": key,
            "total": len(bound),
        },
    )


@router.get("/v1.3/iot-03/devices")
async def get_iot03_devices(
    request: Request,
    source_type: str = "",
    source_id: str = "",
    device_ids: str = "",
    page_size: int = 20,
    last_row_key: str = "",
) -> TuyaResponse:
    """Devices of a user (`source_type=tuyaUser`, `source_id=<uid>`), optionally only `device_ids`."""
    fleet = await openapi._fleet_for(request)
    if source_type and source_type != "tuyaUser":
        raise CloudRefusal(errors.PARAM_ILLEGAL, "param illegal: source_type")
    wanted = {i for i in device_ids.split(",") if i}
    chosen = [
        d
        for d in _bound(fleet)
        if (not source_id or d.uid == source_id) and (not wanted or d.device_id in wanted)
    ]
    page, has_more, key = _page(chosen, page_size, last_row_key)
    return openapi._ok(
        request,
        {
            "list": [device_v1(fleet, d) for d in page],
            "has_more": has_more,
            "last_row_key": key,
            "total": len(chosen),
        },
    )


@router.get("/v1.0/devices")
@router.get("/v1.0/devices/")  # tuya-iot-py-sdk calls (and signs) it with the slash
async def get_devices_by_ids(request: Request, device_ids: str = "") -> TuyaResponse:
    """The listed devices (at most 20) in the device view (tuya-iot-py-sdk `update_device_caches`)."""
    fleet = await openapi._fleet_for(request)
    ids = openapi._ids(device_ids)
    found = [fleet.devices[i] for i in ids if i in fleet.devices and fleet.devices[i].bound]
    return openapi._ok(
        request,
        {
            "devices": [device_v1(fleet, d) for d in found],
            "total": len(found),
            "has_more": False,
            "last_row_key": "",
        },
    )


def _mac(device: Device) -> str:
    # a stable, locally administered address derived from the device id (the sim has no hardware)
    digest = bytearray(hashlib.sha256(device.device_id.encode()).digest()[:6])
    digest[0] = (digest[0] | 0x02) & 0xFE
    return ":".join(f"{b:02x}" for b in digest)


@router.get("/v1.0/devices/factory-infos")
@router.get("/v1.0/iot-03/devices/factory-infos")
async def get_factory_infos(request: Request, device_ids: str = "") -> TuyaResponse:
    fleet = await openapi._fleet_for(request)
    ids = [i for i in device_ids.split(",") if i]
    if not ids:
        raise CloudRefusal(openapi.PARAM_EMPTY, "param is empty: device_ids")
    if len(ids) > MAX_FACTORY_INFOS:
        raise CloudRefusal(openapi.PARAM_RANGE, f"param out of range: at most {MAX_FACTORY_INFOS} device ids")
    found = [fleet.devices[i] for i in ids if i in fleet.devices and fleet.devices[i].bound]
    return openapi._ok(request, [{"id": d.device_id, "uuid": d.uuid, "mac": _mac(d)} for d in found])


# -- per device under iot-03 (tinytuya getstatus/getfunctions/getproperties/sendcommand) -----------------


@router.get("/v1.0/iot-03/devices/{device_id}/status")
async def get_iot03_status(request: Request, device_id: str) -> TuyaResponse:
    return await openapi.get_status(request, device_id)


@router.get("/v1.0/iot-03/devices/{device_id}/functions")
async def get_iot03_functions(request: Request, device_id: str) -> TuyaResponse:
    return await openapi.get_functions(request, device_id)


@router.get("/v1.0/iot-03/devices/{device_id}/specification")
async def get_iot03_specification(request: Request, device_id: str) -> TuyaResponse:
    return await openapi.get_specifications(request, "v1.0", device_id)


@router.post("/v1.0/iot-03/devices/{device_id}/commands")
@router.post("/v1.0/devices/{device_id}/commands")
async def post_commands(request: Request, device_id: str) -> TuyaResponse:
    """DP values to a device; it applies them and reports its new status on the push stream."""
    await openapi._fleet_for(request)
    send_commands(openapi._sim(request), device_id, await _json_body(request))
    return openapi._ok(request, True)


# -- IoT Core shadow --------------------------------------------------------------------------------------


@router.get("/v2.0/cloud/thing/{device_id}/shadow/properties")
async def get_shadow_properties(request: Request, device_id: str, codes: str = "") -> TuyaResponse:
    fleet = await openapi._fleet_for(request)
    device = fleet.device(device_id)
    wanted = {c for c in codes.split(",") if c}
    properties: list[dict[str, Any]] = [
        {
            "code": dp.code,
            "dp_id": dp.dp_id,
            "time": device.dps[dp.code].t,
            "value": device.dps[dp.code].value,
            "custom_name": device.dp_names.get(dp.dp_id, ""),
            "type": dp.type.device_name,
        }
        for dp in fleet.product_of(device).dps
        if not wanted or dp.code in wanted
    ]
    return openapi._ok(request, {"properties": properties})


# -- MQTT open hub: not simulated ---------------------------------------------------------------------------


@router.post("/v1.0/open-hub/access/config")
@router.post("/v1.0/iot-03/open-hub/access-config")
async def post_mq_access_config(request: Request) -> TuyaResponse:
    await openapi._fleet_for(request)
    raise CloudRefusal(
        API_NOT_SUBSCRIBED,
        "No permissions. This API is not subscribed. (tuya-sim simulates the message service over Pulsar, "
        "not the MQTT open hub)",
    )
