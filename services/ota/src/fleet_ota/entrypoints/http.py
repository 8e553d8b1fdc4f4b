"""HTTP API: the firmware catalog, ota's device directory, releases and their per-region commands.

Routes parse the body (a 422 names the field), call one handler and answer from the views. A rule the domain
refuses is a 409 (a conflicting firmware, a region that cannot do that now) or a 422 (a plan that makes no
sense); an unknown firmware or release is a 404. Writes need `ota:write` (catalog, devices) or `ota:release`
(releases), checked for the product concerned; every write is audited by the security kit.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import time
from fractions import Fraction
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, status
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from fleet_contracts.ota import UpgradeType
from fleet_ota.domain.firmware import CatalogError, FirmwareSpec
from fleet_ota.domain.release import Canary, RegionPlan, RegionRollout, ReleaseError, Threshold
from fleet_ota.domain.schedule import DispatchRate, Schedule, ScheduleError, Window
from fleet_ota.domain.targeting import DeviceRecord
from fleet_ota.ports import DeviceDirectory
from fleet_ota.service_layer import handlers as h
from fleet_ota.service_layer.handlers import Conflict, NotFound, Ports
from fleet_ota.views import FirmwareView, OtaViews, ReleaseView
from fleet_shared.security import ApiSecurity, CurrentPrincipal, check
from fleet_shared.service import Answer, DomainErrors

Id = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")]
_ID = r"^[A-Za-z0-9_.-]+$"
_VERSION = r"^\d{1,5}(\.\d{1,5}){0,5}$"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FirmwareBody(_Body):
    product_id: str = Field(min_length=1, max_length=64, pattern=_ID)
    channel: int = Field(ge=0, le=19, description="0 module, 1 Bluetooth, 3 Zigbee, 9 MCU, 10-19 extensions.")
    version: str = Field(pattern=_VERSION)
    size_bytes: int = Field(gt=0, le=1 << 31)
    md5: str = Field(pattern=r"^[0-9a-f]{32}$")
    signature: str = Field(min_length=1, max_length=512)
    url: str = Field(pattern=r"^https://", max_length=2048)
    upgrade_type: UpgradeType = UpgradeType.SILENT
    packet_timeout_s: int = Field(60, ge=10, le=3600)


class DeviceBody(_Body):
    device_id: str = Field(min_length=1, max_length=64, pattern=_ID)
    product_id: str = Field(min_length=1, max_length=64, pattern=_ID)
    region: str = Field(min_length=1, max_length=16, pattern=_ID)
    activated_at: AwareDatetime
    versions: dict[int, Annotated[str, Field(max_length=32)]] = Field(description="channel -> version")


class DevicesBody(_Body):
    devices: list[DeviceBody] = Field(min_length=1, max_length=5000)


class ThresholdBody(_Body):
    rate: float = Field(ge=0, le=1)
    min_sample: int = Field(0, ge=0)


class WindowBody(_Body):
    start: time
    end: time
    weekdays: list[int] = Field(default_factory=lambda: list(range(7)), min_length=1, max_length=7)


class RegionBody(_Body):
    region: str = Field(min_length=1, max_length=16, pattern=_ID)
    verification_devices: list[str] = Field(default_factory=list, max_length=1000)
    canary_ratio: str | None = Field(None, pattern=r"^(0(\.\d+)?|1(\.0+)?)$", description="e.g. 0.1")
    canary_quantity: int | None = Field(None, ge=1)
    promote_at: ThresholdBody | None = Field(None, description="None: promote by hand")
    halt_at: ThresholdBody | None = Field(None, description="None: no automatic halt")
    late_joiners: bool = True
    start_at: AwareDatetime | None = None
    window: WindowBody | None = None
    time_zone: str = Field("UTC", max_length=64)
    per_minute: float = Field(60.0, gt=0, le=1_000_000)
    jitter: float = Field(0.0, ge=0, lt=1)

    def plan(self) -> RegionPlan:
        canary = None
        if self.canary_ratio is not None or self.canary_quantity is not None:
            ratio = None if self.canary_ratio is None else Fraction(self.canary_ratio)
            canary = Canary(ratio=ratio, quantity=self.canary_quantity)
        w = self.window
        return RegionPlan(
            region=self.region,
            verification_devices=tuple(self.verification_devices),
            canary=canary,
            promote_at=None if self.promote_at is None else Threshold(**self.promote_at.model_dump()),
            halt_at=None if self.halt_at is None else Threshold(**self.halt_at.model_dump()),
            late_joiners=self.late_joiners,
            schedule=Schedule(
                start_at=self.start_at,
                time_zone=self.time_zone,
                window=None if w is None else Window(w.start, w.end, frozenset(w.weekdays)),
            ),
            dispatch=DispatchRate(self.per_minute, self.jitter),
        )


class ReleaseBody(_Body):
    release_id: str = Field(min_length=1, max_length=64, pattern=_ID)
    firmware_id: str = Field(min_length=1, max_length=128)
    regions: list[RegionBody] = Field(min_length=1, max_length=32)


class ActionBody(_Body):
    reason: str | None = Field(None, max_length=500)


Action = Literal["pause", "resume", "stop", "promote"]


class Imported(BaseModel):
    recorded: int


def _unprocessable(message: str, field: str = "body") -> HTTPException:
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_ENTITY, [{"field": field, "message": message, "type": "value_error"}]
    )


# a write that keeps losing to concurrent ones (`Conflict`) is worth retrying at once
DOMAIN_ERRORS = DomainErrors(
    Answer(NotFound, status.HTTP_404_NOT_FOUND),
    Answer((CatalogError, ReleaseError), status.HTTP_409_CONFLICT),
    Answer(Conflict, status.HTTP_503_SERVICE_UNAVAILABLE, headers={"Retry-After": "1"}),
)


def api_router(security: ApiSecurity, ports: Ports, devices: DeviceDirectory, views: OtaViews) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["ota"])

    async def _release_of(release_id: str) -> ReleaseView:
        view = await views.release(release_id)
        if view is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no release {release_id}")
        return view

    @router.post(
        "/firmware",
        status_code=status.HTTP_201_CREATED,
        response_model=FirmwareView,
        dependencies=[Depends(security.require("ota:write"))],
    )
    async def register_firmware(body: FirmwareBody, principal: CurrentPrincipal) -> FirmwareView:
        """Register a firmware build (immutable: the same content again is a no-op, other content a 409)."""
        check(principal, "ota:write", body.product_id)
        spec = FirmwareSpec(**body.model_dump())
        if problems := spec.problems():
            raise _unprocessable("; ".join(problems))
        with DOMAIN_ERRORS:
            return FirmwareView.of(await h.register_firmware(spec, principal.subject, ports))

    @router.get(
        "/firmware/{firmware_id}",
        response_model=FirmwareView,
        dependencies=[Depends(security.require("ota:read"))],
    )
    async def get_firmware(firmware_id: Id) -> FirmwareView:
        view = await views.firmware_view(firmware_id)
        if view is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no firmware {firmware_id}")
        return view

    @router.delete(
        "/firmware/{firmware_id}",
        response_model=FirmwareView,
        dependencies=[Depends(security.require("ota:write"))],
    )
    async def withdraw_firmware(firmware_id: Id, principal: CurrentPrincipal) -> FirmwareView:
        """Withdraw a firmware; refused (409) while a release of it is open: stop the release first."""
        with DOMAIN_ERRORS:
            current = await ports.firmware.get(firmware_id)
            if current is not None:
                check(principal, "ota:write", current.spec.product_id)
            return FirmwareView.of(await h.withdraw_firmware(firmware_id, ports))

    @router.post("/devices", response_model=Imported, dependencies=[Depends(security.require("ota:write"))])
    async def record_devices(body: DevicesBody, principal: CurrentPrincipal) -> Imported:
        """Record devices in ota's directory (product, region, activation time, version per channel)."""
        for product in {d.product_id for d in body.devices}:
            check(principal, "ota:write", product)
        records = [
            DeviceRecord(d.device_id, d.product_id, d.region, d.activated_at, dict(d.versions))
            for d in body.devices
        ]
        await devices.record_many(records)
        return Imported(recorded=len(records))

    @router.post(
        "/releases",
        status_code=status.HTTP_201_CREATED,
        response_model=ReleaseView,
        dependencies=[Depends(security.require("ota:release"))],
    )
    async def create_release(body: ReleaseBody, principal: CurrentPrincipal) -> ReleaseView:
        """Create a release: one rollout per region, started by the scheduler once its start time comes."""
        fw = await ports.firmware.get(body.firmware_id)
        if fw is None or fw.withdrawn:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no firmware {body.firmware_id}")
        check(principal, "ota:release", fw.spec.product_id)
        plans = []
        for i, region in enumerate(body.regions):
            try:
                plans.append(region.plan())
            except (ReleaseError, ScheduleError) as e:
                raise _unprocessable(str(e), f"body.regions.{i}") from e
        if len({p.region for p in plans}) != len(plans):
            raise _unprocessable("each region at most once", "body.regions")
        if existing := await views.release(body.release_id):
            if existing.firmware_id != body.firmware_id:
                raise HTTPException(status.HTTP_409_CONFLICT, f"release {body.release_id} exists")
            return existing
        with DOMAIN_ERRORS:
            await h.create_release(body.release_id, body.firmware_id, plans, ports)
        return await _release_of(body.release_id)

    @router.get(
        "/releases/{release_id}",
        response_model=ReleaseView,
        dependencies=[Depends(security.require("ota:read"))],
    )
    async def get_release(release_id: Id) -> ReleaseView:
        """The release, each region's status and stage, and progress per stage (from counters, no scan)."""
        return await _release_of(release_id)

    def _command(
        action: Action, release_id: str, by: str, reason: str | None
    ) -> Callable[[str], Awaitable[RegionRollout]]:
        def run(region: str) -> Awaitable[RegionRollout]:
            match action:
                case "pause":
                    return h.pause_rollout(release_id, region, by, reason, ports)
                case "resume":
                    return h.resume_rollout(release_id, region, by, ports)
                case "stop":
                    return h.stop_rollout(release_id, region, ports)
                case "promote":
                    return h.promote_rollout(release_id, region, by, ports)

        return run

    async def _check_release(release_id: str, principal: CurrentPrincipal) -> ReleaseView:
        view = await _release_of(release_id)
        check(principal, "ota:release", view.product_id)
        return view

    @router.post(
        "/releases/{release_id}/{action}",
        response_model=ReleaseView,
        dependencies=[Depends(security.require("ota:release"))],
    )
    async def release_command(
        release_id: Id, action: Action, principal: CurrentPrincipal, body: ActionBody | None = None
    ) -> ReleaseView:
        """Pause, resume, stop or promote every region of the release (each its own state machine)."""
        await _check_release(release_id, principal)
        run = _command(action, release_id, principal.subject, body.reason if body else None)
        with DOMAIN_ERRORS:
            await h.for_each_region(release_id, ports, run)
        return await _release_of(release_id)

    @router.post(
        "/releases/{release_id}/regions/{region}/{action}",
        response_model=ReleaseView,
        dependencies=[Depends(security.require("ota:release"))],
    )
    async def region_command(
        release_id: Id,
        region: Id,
        action: Action,
        principal: CurrentPrincipal,
        body: ActionBody | None = None,
    ) -> ReleaseView:
        """Pause, resume, stop or promote one region; the others are not touched."""
        await _check_release(release_id, principal)
        with DOMAIN_ERRORS:
            await _command(action, release_id, principal.subject, body.reason if body else None)(region)
        return await _release_of(release_id)

    return router
