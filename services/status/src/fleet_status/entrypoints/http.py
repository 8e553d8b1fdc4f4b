"""HTTP API: shadows, device lists, DP history and presence timeline, behind bearer API keys.

Cursors are opaque (base64 of the last row's sort key); a page shorter than `limit` has no `next_cursor`.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from fleet_status.adapters.mongo import ApiKeyStore, HistoryStore, ShadowStore

DeviceId = Annotated[str, Path(min_length=1, max_length=64, description="Tuya device id.")]

_bearer = HTTPBearer(auto_error=False, description="An API key issued by `fleet-status api-key add`.")


class DpView(BaseModel):
    code: str
    dp_id: int | None = None
    value: Any = None
    raw: Any = None
    type: str | None = None
    flags: dict[str, bool] | None = None
    device_time_ms: int
    source: str = "device"


class PresenceView(BaseModel):
    online: bool | None = None
    changed_at_ms: int | None = None
    last_seen_ms: int | None = None


class BindingView(BaseModel):
    state: str | None = None
    owner_uid: str | None = None
    home_id: str | None = None


class FirmwareView(BaseModel):
    channel: int
    upgrade_status: int
    progress_percent: int | None = None
    description: str | None = None
    version: str | None = None


class ShadowView(BaseModel):
    device_id: str
    product_id: str | None = None
    version: int
    updated_at: datetime | None = None
    name: str | None = None
    presence: PresenceView
    binding: BindingView
    dps: dict[str, DpView]
    dp_names: dict[str, str] = Field(default_factory=dict)
    firmware: dict[str, FirmwareView] = Field(default_factory=dict)


class ShadowPage(BaseModel):
    items: list[ShadowView]
    next_cursor: str | None = None


class HistoryRow(BaseModel):
    code: str
    dp_id: int | None = None
    value: Any = None
    raw: Any = None
    device_time_ms: int


class HistoryPage(BaseModel):
    items: list[HistoryRow]
    next_cursor: str | None = None


class PresenceRow(BaseModel):
    online: bool
    device_time_ms: int


class PresencePage(BaseModel):
    items: list[PresenceRow]
    next_cursor: str | None = None


def shadow_view(doc: dict[str, Any]) -> ShadowView:
    name = doc.get("name")
    return ShadowView(
        device_id=doc["_id"],
        product_id=doc.get("product_id"),
        version=int(doc.get("version", 0)),
        updated_at=doc.get("updated_at"),
        name=name["name"] if name else None,
        presence=PresenceView(**(doc.get("presence") or {})),
        binding=BindingView(
            **{k: v for k, v in (doc.get("binding") or {}).items() if k in ("state", "owner_uid", "home_id")}
        ),
        dps={
            dp["code"]: DpView(
                code=dp["code"],
                dp_id=dp.get("dp_id"),
                value=dp.get("value"),
                raw=dp.get("raw"),
                type=dp.get("type"),
                flags=dp.get("flags"),
                device_time_ms=dp["t"],
                source=dp.get("source", "device"),
            )
            for dp in doc.get("dps", [])
        },
        dp_names={str(n["dp_id"]): n["name"] for n in doc.get("dp_names", [])},
        firmware={
            str(fw["channel"]): FirmwareView(
                channel=fw["channel"],
                upgrade_status=fw["upgrade_status"],
                progress_percent=fw.get("progress_percent"),
                description=fw.get("description"),
                version=fw.get("version"),
            )
            for fw in doc.get("firmware", [])
        },
    )


def _encode_cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(value)).decode()


def _decode_cursor(cursor: str) -> Any:
    try:
        return orjson.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, TypeError) as e:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "invalid cursor") from e


def _time_cursor(cursor: str | None) -> tuple[int, str] | None:
    if cursor is None:
        return None
    value = _decode_cursor(cursor)
    if not (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], int)
        and isinstance(value[1], str)
    ):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "invalid cursor")
    return value[0], value[1]


def api_router(shadows: ShadowStore, history: HistoryStore, keys: ApiKeyStore) -> APIRouter:
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
        doc = await shadows.get(device_id)
        if doc is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no shadow for device {device_id}")
        return shadow_view(doc)

    @router.get("/devices", response_model=ShadowPage)
    async def list_devices(
        product_id: Annotated[str | None, Query(max_length=64)] = None,
        home_id: Annotated[str | None, Query(max_length=64)] = None,
        online: bool | None = None,
        cursor: Annotated[str | None, Query(max_length=512)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> ShadowPage:
        """Shadows by product, home and online state, in device id order."""
        after = None
        if cursor is not None:
            after = _decode_cursor(cursor)
            if not isinstance(after, str):
                raise HTTPException(status.HTTP_400_BAD_REQUEST, "invalid cursor")
        docs = await shadows.list(
            product_id=product_id, home_id=home_id, online=online, after=after, limit=limit
        )
        next_cursor = _encode_cursor(docs[-1]["_id"]) if len(docs) == limit else None
        return ShadowPage(items=[shadow_view(d) for d in docs], next_cursor=next_cursor)

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
        rows = await history.dp_history_page(
            device_id,
            code,
            since_ms=since_ms,
            until_ms=until_ms if until_ms is not None else int(time.time() * 1000) + 86_400_000,
            before=_time_cursor(cursor),
            limit=limit,
            now=datetime.now(UTC),
        )
        next_cursor = _encode_cursor([rows[-1]["t"], rows[-1]["_id"]]) if len(rows) == limit else None
        return HistoryPage(
            items=[
                HistoryRow(
                    code=r["code"],
                    dp_id=r.get("dp_id"),
                    value=r.get("value"),
                    raw=r.get("raw"),
                    device_time_ms=r["t"],
                )
                for r in rows
            ],
            next_cursor=next_cursor,
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
        rows = await history.presence_page(
            device_id,
            since_ms=since_ms,
            until_ms=until_ms if until_ms is not None else int(time.time() * 1000) + 86_400_000,
            before=_time_cursor(cursor),
            limit=limit,
            now=datetime.now(UTC),
        )
        next_cursor = _encode_cursor([rows[-1]["t"], rows[-1]["_id"]]) if len(rows) == limit else None
        return PresencePage(
            items=[PresenceRow(online=r["online"], device_time_ms=r["t"]) for r in rows],
            next_cursor=next_cursor,
        )

    return router


ReadinessCheck = Callable[[], Awaitable[bool]]
