"""Control API for OTA scenarios under `/sim/ota`: fault rates per region and product, Tuya's rate limit on
the upgrade API, the devices' channel versions, and the count of upgrade commands per device."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from fleet_tuya_sim.domain.ota_faults import ANY, FaultRates
from fleet_tuya_sim.entrypoints.control import _authorized, _sim

router = APIRouter(prefix="/sim/ota", dependencies=[Depends(_authorized)], tags=["simulator control"])


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FaultRule(_Body):
    region: str = ANY
    product_id: str = ANY
    failure: float = Field(0.0, ge=0, le=1)
    timeout: float = Field(0.0, ge=0, le=1)
    done_old_version: float = Field(0.0, ge=0, le=1, description="Tuya says done, the device stays old")


class FaultsBody(_Body):
    rules: list[FaultRule] = Field(default_factory=list, max_length=1000)
    upgrade_rate_per_s: float = Field(0.0, ge=0, description="Tuya's limit on the upgrade API; 0: none")
    upgrade_burst: float = Field(1.0, ge=1)


@router.put("/faults")
async def set_faults(request: Request, body: FaultsBody) -> dict[str, Any]:
    """Replace the OTA fault rules and the upgrade API's rate limit (command counts are kept)."""
    faults = _sim(request).fleet.ota_faults
    for rule in body.rules:
        if rule.failure + rule.timeout + rule.done_old_version > 1:
            raise HTTPException(422, f"rates of {rule.region}/{rule.product_id} add up to more than 1")
    faults.rates = {
        (r.region, r.product_id): FaultRates(r.failure, r.timeout, r.done_old_version) for r in body.rules
    }
    faults.limit_upgrades(body.upgrade_rate_per_s, body.upgrade_burst)
    return {"rules": len(faults.rates)}


@router.get("/commands")
async def commands(request: Request) -> dict[str, Any]:
    """Upgrade commands per device: accepted (an upgrade started) and refused by Tuya error code."""
    return {d: t.as_dict() for d, t in sorted(_sim(request).fleet.ota_faults.commands.items())}


@router.get("/rate")
async def rate(request: Request) -> dict[str, Any]:
    """The upgrade API's limit as it saw the commands (since the limit was last set): passed and refused,
    the rate from the first to the last, the most in any second, per second, and the gaps."""
    return _sim(request).fleet.ota_faults.rate_truth()


@router.get("/devices")
async def devices(
    request: Request,
    product_id: str | None = Query(None, max_length=64),
    region: str | None = Query(None, max_length=16),
) -> list[dict[str, Any]]:
    """Bound devices with what an inventory knows: product, region, activation time, version per channel."""
    sim = _sim(request)
    return [
        {
            "device_id": d.device_id,
            "product_id": d.product_id,
            "region": d.region,
            "active_time": d.active_time,
            "low_power": d.low_power,
            "online": d.online,
            "firmware": {str(ch): v for ch, v in sorted(d.firmware.items())},
        }
        for d in sim.fleet.devices.values()
        if d.bound
        and (product_id is None or d.product_id == product_id)
        and (region is None or d.region == region)
    ]
