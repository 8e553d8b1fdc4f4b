"""Control API of the removal desk under `/sim/unbinding` (see `domain/unbinding.py`): removal faults and the
removal APIs' own rate limit, faults planned per device, LAN scans through a gateway, and the ground truth
of removals per device. Strongly bound devices come from `POST /sim/fleet` (`binding_mode: strong`); a device
scanning an unbinding QR is `POST /sim/pairing/activate` with the QR's token."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from fleet_tuya_sim.domain.unbinding import RemovalDesk, RemovalFaults
from fleet_tuya_sim.entrypoints.control import _authorized
from fleet_tuya_sim.service_layer.simulator import Simulator

router = APIRouter(prefix="/sim/unbinding", dependencies=[Depends(_authorized)], tags=["simulator control"])


def _desk(request: Request) -> RemovalDesk:
    sim: Simulator = request.app.state.simulator
    return sim.removal_desk


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RemovalConfig(_Body):
    rate_per_s: float = Field(0.0, ge=0, description="Removal APIs' own limit (0: project limit only).")
    burst: float = Field(1.0, ge=1)
    offline_ratio: float = Field(0.0, ge=0, le=1)
    rate_limited_ratio: float = Field(0.0, ge=0, le=1)
    not_found_ratio: float = Field(0.0, ge=0, le=1)
    seed: int = 1


class PlanBody(_Body):
    device_id: str = Field(min_length=1)
    codes: list[int] = Field(min_length=1, max_length=20)


class AttachBody(_Body):
    device_ids: list[str] = Field(min_length=1, max_length=10_000)


@router.put("/removals/config")
async def configure(request: Request, body: RemovalConfig) -> dict[str, Any]:
    faults = RemovalFaults(body.offline_ratio, body.rate_limited_ratio, body.not_found_ratio)
    _desk(request).configure(rate_per_s=body.rate_per_s, burst=body.burst, faults=faults, seed=body.seed)
    return body.model_dump()


@router.post("/removals/plan")
async def plan(request: Request, body: PlanBody) -> dict[str, Any]:
    """The next removals of this device answer these codes, in order (then it behaves normally)."""
    _desk(request).plan(body.device_id, body.codes)
    return body.model_dump()


@router.get("/removals")
async def removals(request: Request) -> dict[str, Any]:
    """Removals that took effect per device, devices removed more than once, refusals per code."""
    desk = _desk(request)
    return {**desk.truth(), "max_rate_per_s": desk.max_rate()}


@router.get("/removals/timeline")
async def timeline(request: Request, window_ms: int = Query(1000, ge=10, le=60_000)) -> dict[str, Any]:
    """Removals that took effect and rate-limit refusals (1199) per window, from the first removal."""
    return _desk(request).timeline(window_ms)


@router.get("/removals/devices/{device_id}")
async def removals_of(request: Request, device_id: str) -> dict[str, Any]:
    """When (simulator ms) each removal of this device took effect (latency measurements)."""
    return {"device_id": device_id, "removed_at_ms": list(_desk(request).removals.get(device_id, []))}


@router.delete("/removals")
async def reset(request: Request) -> dict[str, Any]:
    _desk(request).reset()
    return {"reset": True}


@router.post("/lan/{gateway_id}")
async def attach(request: Request, gateway_id: str, body: AttachBody) -> dict[str, Any]:
    """Wire devices behind a gateway: a LAN scan through it finds them."""
    _desk(request).attach(gateway_id, body.device_ids)
    return {"gateway_id": gateway_id, "device_ids": _desk(request).lan_scan(gateway_id)}


@router.get("/lan/{gateway_id}")
async def lan_scan(request: Request, gateway_id: str) -> dict[str, Any]:
    """What the operator's LAN scan through this gateway finds (the proof of presence of wired mode)."""
    return {"gateway_id": gateway_id, "device_ids": _desk(request).lan_scan(gateway_id)}
