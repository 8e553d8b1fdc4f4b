"""HTTP API: shadows, device lists, DP history and presence timeline, behind bearer API keys.

Routes parse, ask the views (`fleet_status.views`) and answer; they never see a stored document.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from fleet_status.ports import ApiKeys
from fleet_status.views import (
    HistoryPage,
    InvalidCursor,
    PresencePage,
    ShadowPage,
    ShadowView,
    StatusViews,
)

DeviceId = Annotated[str, Path(min_length=1, max_length=64, description="Tuya device id.")]

_bearer = HTTPBearer(auto_error=False, description="An API key issued by `fleet-status api-key add`.")


@contextmanager
def _bad_cursor_is_400() -> Iterator[None]:
    try:
        yield
    except InvalidCursor as e:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(e)) from e


class InactivityTimeoutBody(BaseModel):
    timeout_s: float | None = Field(
        description="The device's own inactivity timeout in seconds (0: never); null: its product's.",
        ge=0,
        le=30 * 86400,
    )


def api_router(
    views: StatusViews,
    keys: ApiKeys,
    *,
    set_inactivity_timeout: Callable[[str, float | None], Awaitable[None]] | None = None,
) -> APIRouter:
    async def authenticated(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> str:
        if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED, "missing bearer API key", headers={"WWW-Authenticate": "Bearer"}
            )
        name = await keys.name_of(credentials.credentials)
        if name is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED, "unknown API key", headers={"WWW-Authenticate": "Bearer"}
            )
        return name

    router = APIRouter(prefix="/v1", tags=["status"], dependencies=[Depends(authenticated)])

    @router.get("/devices/{device_id}/shadow", response_model=ShadowView)
    async def get_shadow(device_id: DeviceId) -> ShadowView:
        """The device's shadow: presence, every DP (typed, with its device time), binding, name, firmware."""
        view = await views.shadow(device_id)
        if view is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no shadow for device {device_id}")
        return view

    @router.get("/devices", response_model=ShadowPage)
    async def list_devices(
        product_id: Annotated[str | None, Query(max_length=64)] = None,
        home_id: Annotated[str | None, Query(max_length=64)] = None,
        online: bool | None = None,
        cursor: Annotated[str | None, Query(max_length=512)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> ShadowPage:
        """Shadows by product, home and online state, in device id order."""
        with _bad_cursor_is_400():
            return await views.devices(
                product_id=product_id, home_id=home_id, online=online, cursor=cursor, limit=limit
            )

    @router.get("/devices/{device_id}/history", response_model=HistoryPage)
    async def dp_history(
        device_id: DeviceId,
        code: Annotated[
            str | None, Query(max_length=64, description="One DP code; all DPs when absent.")
        ] = None,
        since_ms: Annotated[int, Query(ge=0)] = 0,
        until_ms: Annotated[int | None, Query(ge=0)] = None,
        cursor: Annotated[str | None, Query(max_length=512)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    ) -> HistoryPage:
        """Reported DP values, newest first, within the retention window (7 days by default)."""
        with _bad_cursor_is_400():
            return await views.dp_history(
                device_id, code=code, since_ms=since_ms, until_ms=until_ms, cursor=cursor, limit=limit
            )

    @router.get("/devices/{device_id}/presence", response_model=PresencePage)
    async def presence_timeline(
        device_id: DeviceId,
        since_ms: Annotated[int, Query(ge=0)] = 0,
        until_ms: Annotated[int | None, Query(ge=0)] = None,
        cursor: Annotated[str | None, Query(max_length=512)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    ) -> PresencePage:
        """Online/offline reports by device time, newest first, within the retention window."""
        with _bad_cursor_is_400():
            return await views.presence(
                device_id, since_ms=since_ms, until_ms=until_ms, cursor=cursor, limit=limit
            )

    if set_inactivity_timeout is not None:
        setter = set_inactivity_timeout

        @router.put(
            "/devices/{device_id}/inactivity-timeout",
            status_code=status.HTTP_202_ACCEPTED,
            response_model=None,
        )
        async def put_inactivity_timeout(
            device_id: DeviceId, body: InactivityTimeoutBody
        ) -> dict[str, object]:
            """Set the device's own inactivity timeout, or clear it (null) to use its product's. The shadow
            writer applies it shortly (202); the latest command wins."""
            if await views.shadow(device_id) is None:
                raise HTTPException(status.HTTP_404_NOT_FOUND, f"no shadow for device {device_id}")
            await setter(device_id, body.timeout_s)
            return {"device_id": device_id, "timeout_s": body.timeout_s}

    return router
