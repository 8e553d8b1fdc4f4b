"""Control API for pairing under `/sim/pairing`: devices that activate after a delay, fail with a chosen
Tuya code, or are provisioned with SSID, password and token (a custom provisioner, or a camera scanning the
QR payload); the site's Wi-Fi networks. Secrets in these bodies (passwords, assembled tokens) are never
logged or kept."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from fleet_tuya_sim.domain.fleet import ActivationOutcome
from fleet_tuya_sim.domain.provisioning import (
    MAX_PAIRING_CODE,
    MIN_PAIRING_CODE,
    BadProvisioning,
    Credentials,
    parse_qr_payload,
)
from fleet_tuya_sim.entrypoints.control import _authorized
from fleet_tuya_sim.service_layer.provisioner import Provisioner

router = APIRouter(prefix="/sim/pairing", dependencies=[Depends(_authorized)], tags=["simulator control"])


def _provisioner(request: Request) -> Provisioner:
    provisioner: Provisioner | None = getattr(request.app.state, "provisioner", None)
    if provisioner is None or provisioner.sim is not request.app.state.simulator:
        provisioner = request.app.state.provisioner = Provisioner(request.app.state.simulator)
    return provisioner


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


DeviceIds = Field(min_length=1, max_length=1000)
Delay = Field(0.0, ge=0, le=3600, description="seconds until the devices act (0: now)")


def _answer(outcomes: list[ActivationOutcome], delay_s: float) -> dict[str, Any]:
    return {"scheduled": delay_s > 0, "outcomes": [o.as_dict() for o in outcomes]}


class LaterBody(_Body):
    token: SecretStr = Field(description="the assembled token: region + token + secret")
    device_ids: list[str] = DeviceIds
    delay_s: float = Delay


@router.post("/activate-later")
async def activate_later(request: Request, body: LaterBody) -> dict[str, Any]:
    """The devices activate with the token after `delay_s` (the token's rules apply at that moment)."""
    outcomes = _provisioner(request).activate(body.device_ids, body.token.get_secret_value(), body.delay_s)
    return _answer(outcomes, body.delay_s)


class FailBody(LaterBody):
    code: int = Field(ge=MIN_PAIRING_CODE, le=MAX_PAIRING_CODE, description="Tuya's pairing code, 1-601")
    msg: str = Field("", max_length=256)


@router.post("/fail")
async def fail(request: Request, body: FailBody) -> dict[str, Any]:
    """The devices fail to pair with Tuya's `code` (e.g. 3 wrong Wi-Fi password, 106 timeout)."""
    outcomes = _provisioner(request).fail(
        body.device_ids, body.token.get_secret_value(), str(body.code), body.msg, body.delay_s
    )
    return _answer(outcomes, body.delay_s)


class ProvisionBody(_Body):
    device_ids: list[str] = DeviceIds
    ssid: str | None = Field(None, max_length=64)
    password: SecretStr | None = None
    token: SecretStr | None = Field(None, description="the assembled token")
    qr_payload: SecretStr | None = Field(None, description='a camera\'s scan: {"s","p","t"}')
    delay_s: float = Delay

    def credentials(self) -> Credentials:
        """Either ssid, password and token, or a QR payload; `BadProvisioning` otherwise."""
        given = self.ssid is not None and self.password is not None and self.token is not None
        if given == (self.qr_payload is not None):
            raise BadProvisioning("give either ssid, password and token, or qr_payload")
        if self.qr_payload is not None:
            return parse_qr_payload(self.qr_payload.get_secret_value())
        ssid, password, token = self.ssid or "", self.password or SecretStr(""), self.token or SecretStr("")
        return Credentials(ssid, password.get_secret_value(), token.get_secret_value())


@router.post("/provision")
async def provision(request: Request, body: ProvisionBody) -> dict[str, Any]:
    """A custom provisioner (or a camera reading the QR code) hands the devices SSID, password and token:
    they join the site's Wi-Fi (code 2 / 3 when they cannot), then activate."""
    try:
        credentials = body.credentials()
    except BadProvisioning as e:
        raise HTTPException(422, str(e)) from None
    outcomes = _provisioner(request).provision(body.device_ids, credentials, body.delay_s)
    return _answer(outcomes, body.delay_s)


class NetworksBody(_Body):
    networks: dict[str, SecretStr] = Field(description="ssid -> password; empty: any network, any password")


@router.put("/networks")
async def set_networks(request: Request, body: NetworksBody) -> dict[str, Any]:
    """The site's Wi-Fi networks provisioned devices can join."""
    site = _provisioner(request).site
    site.networks = {ssid: pw.get_secret_value() for ssid, pw in body.networks.items()}
    return {"networks": sorted(site.networks)}


@router.get("/pending")
async def pending(request: Request) -> dict[str, Any]:
    """Delayed steps not yet run, and the outcomes of those that ran."""
    p = _provisioner(request)
    return {"pending": p.pending, "done": _answer(p.outcomes, 0)["outcomes"]}
