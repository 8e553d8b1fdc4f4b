"""Control API under `/sim`: create fleets, run scenarios, make devices pair, leave, upgrade or misbehave,
and read the ground truth. For developers and tests; guarded by a bearer token when one is configured."""

from __future__ import annotations

import hmac
from typing import Any, Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from fleet_tuya_sim.domain.binding import BindingMode
from fleet_tuya_sim.domain.fleet import Fleet, FleetSpec
from fleet_tuya_sim.domain.ota import FirmwareRelease, OtaOutcome
from fleet_tuya_sim.domain.products import CATALOG
from fleet_tuya_sim.service_layer.malformed import Malformation
from fleet_tuya_sim.service_layer.simulator import ScenarioSpec, Simulator
from fleet_tuya_sim.service_layer.truth import device_truth


async def _authorized(request: Request, authorization: str | None = Header(None)) -> None:
    expected: str | None = request.app.state.control_token
    if expected is None:
        return
    presented = (authorization or "").removeprefix("Bearer ").strip()
    if not hmac.compare_digest(presented.encode(), expected.encode()):
        raise HTTPException(401, "control token required (Authorization: Bearer ...)")


router = APIRouter(prefix="/sim", dependencies=[Depends(_authorized)], tags=["simulator control"])


def _sim(request: Request) -> Simulator:
    sim: Simulator = request.app.state.simulator
    return sim


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FleetBody(_Body):
    seed: int = 1
    devices: int = Field(100, ge=0, le=100_000)
    homes: int = Field(10, ge=1, le=10_000)
    regions: list[str] = Field(default_factory=lambda: ["eu", "us"], min_length=1)
    product_ids: list[str] = Field(default_factory=list)
    unbound: int = Field(0, ge=0, le=100_000)
    online_ratio: float = Field(0.9, ge=0, le=1)
    binding_mode: BindingMode | None = None


def fleet_summary(fleet: Fleet) -> dict[str, Any]:
    return {
        "seed": fleet.spec.seed,
        "devices": len(fleet.devices),
        "bound_device_ids": [d.device_id for d in fleet.devices.values() if d.bound],
        "unbound_device_ids": [d.device_id for d in fleet.devices.values() if not d.bound],
        "online": sum(1 for d in fleet.devices.values() if d.online and d.bound),
        "homes": [
            {"home_id": h.home_id, "owner_uid": h.owner_uid, "region": h.region, "name": h.name}
            for h in fleet.homes.values()
        ],
        "products": sorted(fleet.products),
    }


@router.post("/fleet")
async def create_fleet(request: Request, body: FleetBody) -> dict[str, Any]:
    spec = FleetSpec(
        seed=body.seed,
        devices=body.devices,
        homes=body.homes,
        regions=tuple(body.regions),
        product_ids=tuple(body.product_ids),
        unbound=body.unbound,
        online_ratio=body.online_ratio,
        binding_mode=body.binding_mode,
    )
    return fleet_summary(await _sim(request).create_fleet(spec))


@router.get("/fleet")
async def get_fleet(request: Request) -> dict[str, Any]:
    return fleet_summary(_sim(request).fleet)


@router.get("/products")
async def get_products() -> list[dict[str, Any]]:
    return [
        {
            "product_id": p.product_id,
            "name": p.name,
            "category": p.category,
            "binding_mode": p.binding_mode.value,
            "low_power": p.low_power,
            "firmware": {str(k): v for k, v in p.firmware.items()},
            "dps": [
                {
                    "dp_id": dp.dp_id,
                    "code": dp.code,
                    "type": dp.type.device_name,
                    "mode": dp.mode,
                    "values": dp.values_json(),
                }
                for dp in p.dps
            ],
        }
        for p in CATALOG
    ]


class SpawnBody(_Body):
    product_id: str
    count: int = Field(1, ge=1, le=10_000)
    region: str = "eu"


@router.post("/devices")
async def spawn_devices(request: Request, body: SpawnBody) -> dict[str, Any]:
    sim = _sim(request)
    devices = sim.fleet.spawn(body.product_id, body.count, body.region, sim.now_ms())
    return {"device_ids": [d.device_id for d in devices]}


class ReportBody(_Body):
    device_ids: list[str] = Field(default_factory=list)
    count: int = Field(0, ge=0, le=1_000_000)
    max_dps: int = Field(2, ge=1, le=20)


@router.post("/reports")
async def report(request: Request, body: ReportBody) -> dict[str, Any]:
    return {"tids": _sim(request).report(body.device_ids, body.count, body.max_dps)}


@router.post("/devices/{device_id}/online")
async def go_online(request: Request, device_id: str) -> dict[str, Any]:
    return {"tids": _sim(request).set_online(device_id, True)}


@router.post("/devices/{device_id}/offline")
async def go_offline(request: Request, device_id: str) -> dict[str, Any]:
    return {"tids": _sim(request).set_online(device_id, False)}


class WakeBody(_Body):
    window_s: float | None = Field(None, gt=0)


@router.post("/devices/{device_id}/wake")
async def wake(request: Request, device_id: str, body: WakeBody | None = None) -> dict[str, Any]:
    _sim(request).wake(device_id, body.window_s if body else None)
    return {"ok": True}


class RenameBody(_Body):
    name: str = Field(min_length=1, max_length=255)


@router.post("/devices/{device_id}/rename")
async def rename(request: Request, device_id: str, body: RenameBody) -> dict[str, Any]:
    return {"tids": _sim(request).rename(device_id, body.name)}


@router.post("/devices/{device_id}/dps/{dp_id}/rename")
async def rename_dp(request: Request, device_id: str, dp_id: int, body: RenameBody) -> dict[str, Any]:
    return {"tids": _sim(request).rename_dp(device_id, dp_id, body.name)}


class RemoveBody(_Body):
    reset: bool = False


@router.post("/devices/{device_id}/remove")
async def remove(request: Request, device_id: str, body: RemoveBody | None = None) -> dict[str, Any]:
    """Removal from the app side (the owner removes the device): the same messages as the OpenAPI removal."""
    return {"tids": _sim(request).unbind(device_id, reset=bool(body and body.reset))}


# -- pairing ---------------------------------------------------------------------------------------------


class TokenBody(_Body):
    uid: str
    home_id: str | None = None
    pairing_type: Literal["EZ", "AP", "BLE"] = "EZ"
    time_zone_id: str = "Europe/Berlin"


@router.post("/pairing/tokens")
async def issue_token(request: Request, body: TokenBody) -> dict[str, Any]:
    """A token as the app would get it; the answer holds the assembled token (a secret: handle with care)."""
    token = _sim(request).issue_pairing_token(
        uid=body.uid, home_id=body.home_id, pairing_type=body.pairing_type, time_zone_id=body.time_zone_id
    )
    return {
        "token": token.token,
        "region": token.region,
        "home_id": token.home_id,
        "expire_ms": token.expire_ms,
        "assembled_token": token.assembled,
    }


class ActivateBody(_Body):
    token: str = Field(description="the assembled token: region + token + secret")
    device_ids: list[str] = Field(min_length=1)


@router.post("/pairing/activate")
async def activate(request: Request, body: ActivateBody) -> list[dict[str, Any]]:
    return [o.as_dict() for o in _sim(request).activate(body.device_ids, body.token)]


# -- OTA -------------------------------------------------------------------------------------------------


class FirmwareBody(_Body):
    product_id: str
    channel: int = Field(0, ge=0, le=19)
    version: str
    upgrade_type: int = Field(0, ge=0, le=3)
    timeout_s: int = Field(300, ge=1)
    file_size: int = Field(524288, ge=1)
    md5: str = ""
    desc: str = ""


@router.post("/firmware")
async def release_firmware(request: Request, body: FirmwareBody) -> dict[str, Any]:
    _sim(request).release_firmware(FirmwareRelease(**body.model_dump()))
    return {"ok": True}


class PlanBody(_Body):
    device_id: str
    channel: int = 0
    outcome: OtaOutcome


@router.post("/ota/plan")
async def plan_upgrade(request: Request, body: PlanBody) -> dict[str, Any]:
    _sim(request).plan_upgrade(body.device_id, body.channel, body.outcome)
    return {"ok": True}


class UpgradeBody(_Body):
    device_id: str
    channel: int = 0


@router.post("/ota/start")
async def start_upgrade(request: Request, body: UpgradeBody) -> dict[str, Any]:
    return {"tids": _sim(request).start_upgrade(body.device_id, body.channel)}


@router.post("/ota/advance")
async def advance(request: Request) -> dict[str, Any]:
    return {"tids": _sim(request).advance()}


# -- scenarios -------------------------------------------------------------------------------------------


class ScenarioBody(_Body):
    rate: float = Field(10.0, ge=0)
    duration_s: float = Field(10.0, gt=0, le=86_400)
    churn_rate: float = Field(0.0, ge=0, le=1)
    max_dps: int = Field(2, ge=1, le=20)
    malformed: int = Field(0, ge=0)
    tick_s: float = Field(0.1, gt=0, le=60)


@router.post("/scenario")
async def start_scenario(request: Request, body: ScenarioBody) -> dict[str, Any]:
    try:
        state = _sim(request).start_scenario(ScenarioSpec(**body.model_dump()))
    except RuntimeError as exc:
        raise HTTPException(409, str(exc)) from None
    return state.as_dict()


@router.get("/scenario")
async def get_scenario(request: Request) -> dict[str, Any] | None:
    state = _sim(request).scenario
    return state.as_dict() if state else None


@router.post("/scenario/wait")
async def wait_scenario(
    request: Request, within_s: float = Query(600.0, alias="timeout", gt=0)
) -> dict[str, Any] | None:
    state = await _sim(request).wait_scenario(within_s)
    return state.as_dict() if state else None


@router.delete("/scenario")
async def stop_scenario(request: Request) -> dict[str, Any] | None:
    sim = _sim(request)
    await sim.stop_scenario()
    return sim.scenario.as_dict() if sim.scenario else None


# -- chaos -----------------------------------------------------------------------------------------------


class ChaosBody(_Body):
    duplicate_ratio: float = Field(0.0, ge=0, le=1)
    shuffle_window: int = Field(0, ge=0, le=100_000)


@router.put("/chaos")
async def set_chaos(request: Request, body: ChaosBody) -> dict[str, Any]:
    sim = _sim(request)
    sim.pipeline.flush_window()
    sim.options.chaos.duplicate_ratio = body.duplicate_ratio
    sim.options.chaos.shuffle_window = body.shuffle_window
    return dict(sim.options.chaos.__dict__)


@router.get("/chaos")
async def get_chaos(request: Request) -> dict[str, Any]:
    return dict(_sim(request).options.chaos.__dict__)


class MalformedBody(_Body):
    count: int = Field(6, ge=1, le=100_000)
    kinds: list[Malformation] = Field(default_factory=list)


@router.post("/chaos/malformed")
async def inject_malformed(request: Request, body: MalformedBody) -> dict[str, Any]:
    return {"tids": _sim(request).inject_malformed(body.count, body.kinds)}


class ReplayBody(_Body):
    count: int = Field(ge=1, le=100_000)
    up_to_seq: int | None = Field(None, ge=1, description="only messages published up to this position")


@router.post("/chaos/replay")
async def replay(request: Request, body: ReplayBody) -> dict[str, Any]:
    """Late re-pushes of earlier messages: same data and tid, new ciphertext, new Pulsar message."""
    return {"tids": _sim(request).replay(body.count, body.up_to_seq)}


# -- tokens, flushing, truth -----------------------------------------------------------------------------


@router.post("/tokens/expire")
async def expire_tokens(request: Request) -> dict[str, Any]:
    """Ends the life of every access token now (clients must refresh or re-acquire: 1010)."""
    return {"expired": request.app.state.gate.access.expire_all()}


@router.post("/flush")
async def flush(request: Request, within_s: float = Query(30.0, alias="timeout", gt=0)) -> dict[str, Any]:
    done = await _sim(request).flush(within_s)
    return {"flushed": done, "summary": _sim(request).truth.summary()}


@router.get("/truth")
async def truth(request: Request, messages: bool = True) -> dict[str, Any]:
    return _sim(request).truth_snapshot(messages=messages)


@router.get("/truth/devices/{device_id}")
async def truth_device(request: Request, device_id: str) -> dict[str, Any]:
    fleet = _sim(request).fleet
    if device_id not in fleet.devices:
        raise HTTPException(404, "unknown device")
    return device_truth(fleet, device_id)


@router.get("/truth/messages")
async def truth_messages(request: Request, offset: int = 0, limit: int = 1000) -> dict[str, Any]:
    records = _sim(request).truth.messages
    page = records[max(0, offset) : max(0, offset) + max(1, min(limit, 100_000))]
    return {"total": len(records), "offset": offset, "messages": [m.as_dict() for m in page]}
