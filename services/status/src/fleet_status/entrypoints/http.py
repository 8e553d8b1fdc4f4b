"""HTTP API: shadows, device lists, DP history and presence timeline, for callers holding `status:read`.

Routes parse, ask the views (`fleet_status.views`) and answer; they never see a stored document.

Product scope (an API key or token limited to some PIDs): lists hold only those products' devices, and a list
asked for another product is 403 (the caller named it, so nothing is revealed). A device of another product is
404, like a device that does not exist: a scoped caller cannot learn which device ids exist elsewhere. For
history and presence the device's product comes from its shadow, so for a scoped caller a device without a
shadow is 404 too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, status
from pydantic import BaseModel, Field

from fleet_shared.security import ApiSecurity, CurrentPrincipal, Permission, Principal, check
from fleet_shared.service import Answer, DomainErrors
from fleet_status.views import (
    HistoryPage,
    InvalidCursor,
    PresencePage,
    ShadowPage,
    ShadowView,
    StatusViews,
)

DeviceId = Annotated[str, Path(min_length=1, max_length=64, description="Tuya device id.")]


DOMAIN_ERRORS = DomainErrors(Answer(InvalidCursor, status.HTTP_400_BAD_REQUEST))


def _no_shadow(device_id: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"no shadow for device {device_id}")


class InactivityTimeoutBody(BaseModel):
    timeout_s: float | None = Field(
        description="The device's own inactivity timeout in seconds (0: never); null: its product's.",
        ge=0,
        le=30 * 86400,
    )


def _visible(principal: Principal, view: ShadowView | None) -> bool:
    """Whether the caller's product scope covers the device (a device of no known product: only when the
    scope is every product)."""
    scope = principal.product_filter()
    return view is not None and (scope is None or view.product_id in scope)


def api_router(
    views: StatusViews,
    security: ApiSecurity,
    *,
    set_inactivity_timeout: Callable[[str, float | None], Awaitable[None]] | None = None,
) -> APIRouter:
    router = APIRouter(
        prefix="/v1", tags=["status"], dependencies=[Depends(security.require(Permission.STATUS_READ))]
    )

    async def require_visible(device_id: str, principal: Principal) -> None:
        # an unscoped caller reads timelines without loading the shadow first
        if principal.product_filter() is not None and not _visible(principal, await views.shadow(device_id)):
            raise _no_shadow(device_id)

    @router.get("/devices/{device_id}/shadow", response_model=ShadowView)
    async def get_shadow(device_id: DeviceId, principal: CurrentPrincipal) -> ShadowView:
        """The device's shadow: presence, every DP (typed, with its device time), binding, name, firmware."""
        view = await views.shadow(device_id)
        if view is None or not _visible(principal, view):
            raise _no_shadow(device_id)
        return view

    @router.get("/devices", response_model=ShadowPage)
    async def list_devices(
        principal: CurrentPrincipal,
        product_id: Annotated[str | None, Query(max_length=64)] = None,
        home_id: Annotated[str | None, Query(max_length=64)] = None,
        online: bool | None = None,
        cursor: Annotated[str | None, Query(max_length=512)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> ShadowPage:
        """Shadows by product, home and online state, in device id order, within the caller's products."""
        if product_id is not None:
            check(principal, Permission.STATUS_READ, product_id)
        with DOMAIN_ERRORS:
            return await views.devices(
                product_id=product_id,
                home_id=home_id,
                online=online,
                cursor=cursor,
                limit=limit,
                products=principal.product_filter(),
            )

    @router.get("/devices/{device_id}/history", response_model=HistoryPage)
    async def dp_history(
        device_id: DeviceId,
        principal: CurrentPrincipal,
        code: Annotated[
            str | None, Query(max_length=64, description="One DP code; all DPs when absent.")
        ] = None,
        since_ms: Annotated[int, Query(ge=0)] = 0,
        until_ms: Annotated[int | None, Query(ge=0)] = None,
        cursor: Annotated[str | None, Query(max_length=512)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    ) -> HistoryPage:
        """Reported DP values, newest first, within the retention window (7 days by default)."""
        with DOMAIN_ERRORS:
            await require_visible(device_id, principal)
            return await views.dp_history(
                device_id, code=code, since_ms=since_ms, until_ms=until_ms, cursor=cursor, limit=limit
            )

    @router.get("/devices/{device_id}/presence", response_model=PresencePage)
    async def presence_timeline(
        device_id: DeviceId,
        principal: CurrentPrincipal,
        since_ms: Annotated[int, Query(ge=0)] = 0,
        until_ms: Annotated[int | None, Query(ge=0)] = None,
        cursor: Annotated[str | None, Query(max_length=512)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    ) -> PresencePage:
        """Online/offline reports by device time, newest first, within the retention window."""
        with DOMAIN_ERRORS:
            await require_visible(device_id, principal)
            return await views.presence(
                device_id, since_ms=since_ms, until_ms=until_ms, cursor=cursor, limit=limit
            )

    if set_inactivity_timeout is not None:
        setter = set_inactivity_timeout

        @router.put(
            "/devices/{device_id}/inactivity-timeout",
            status_code=status.HTTP_202_ACCEPTED,
            response_model=None,
            dependencies=[Depends(security.require(Permission.STATUS_WRITE))],
        )
        async def put_inactivity_timeout(
            device_id: DeviceId, body: InactivityTimeoutBody, principal: CurrentPrincipal
        ) -> dict[str, object]:
            """Set the device's own inactivity timeout, or clear it (null) to use its product's. The shadow
            writer applies it shortly (202); the latest command wins."""
            view = await views.shadow(device_id)
            if view is None or not _visible(principal, view):
                raise _no_shadow(device_id)
            check(principal, Permission.STATUS_WRITE, view.product_id)
            await setter(device_id, body.timeout_s)
            return {"device_id": device_id, "timeout_s": body.timeout_s}

    return router
