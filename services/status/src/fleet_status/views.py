"""Read models of the HTTP API and the queries that build them: routes get these views and never see the
document layout.

Cursors are opaque (base64 of the last row's sort key); a page shorter than `limit` has no `next_cursor`.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import BaseModel, Field

from fleet_status.ports import Document, ShadowQueries, TimelineQueries

# a timeline query without `until_ms` reaches a day past now, so device times ahead of the server clock show
_DEFAULT_UNTIL_AHEAD_MS = 86_400_000


class InvalidCursor(ValueError):
    """A cursor this API did not hand out."""

    def __init__(self) -> None:
        super().__init__("invalid cursor")


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
    # "reported" (online/offline message) or "inactivity" (silent past its timeout: `changed_at_ms` is when it
    # ran out)
    cause: str | None = None


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


def shadow_view(doc: Document) -> ShadowView:
    name = doc.get("name")
    return ShadowView(
        device_id=doc["_id"],
        product_id=doc.get("product_id"),
        version=int(doc.get("version", 0)),
        updated_at=doc.get("updated_at"),
        name=name["name"] if name else None,
        presence=presence_view(doc.get("presence") or {}),
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


def presence_view(presence: Document) -> PresenceView:
    inactive_at = presence.get("inactive_at_ms")
    return PresenceView(
        online=presence.get("online"),
        changed_at_ms=inactive_at if inactive_at is not None else presence.get("changed_at_ms"),
        last_seen_ms=presence.get("last_seen_ms"),
        cause=presence.get("cause"),
    )


def _encode_cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(value)).decode()


def _decode_cursor(cursor: str) -> Any:
    try:
        return orjson.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, TypeError) as e:
        raise InvalidCursor from e


def _id_cursor(cursor: str | None) -> str | None:
    if cursor is None:
        return None
    value = _decode_cursor(cursor)
    if not isinstance(value, str):
        raise InvalidCursor
    return value


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
        raise InvalidCursor
    return value[0], value[1]


def _next_time_cursor(rows: list[Document], limit: int) -> str | None:
    return _encode_cursor([rows[-1]["t"], rows[-1]["_id"]]) if len(rows) == limit else None


class StatusViews:
    """The queries of the HTTP API; a bad cursor raises `InvalidCursor` before anything is read."""

    def __init__(
        self,
        shadows: ShadowQueries,
        history: TimelineQueries,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.shadows = shadows
        self.history = history
        self.clock = clock

    async def shadow(self, device_id: str) -> ShadowView | None:
        doc = await self.shadows.get(device_id)
        return None if doc is None else shadow_view(doc)

    async def devices(
        self,
        *,
        product_id: str | None,
        home_id: str | None,
        online: bool | None,
        cursor: str | None,
        limit: int,
        products: frozenset[str] | None = None,
    ) -> ShadowPage:
        """`products`: only these PIDs (the caller's product scope; None: every product)."""
        after = _id_cursor(cursor)
        docs = await self.shadows.list(
            product_id=product_id, home_id=home_id, online=online, after=after, limit=limit, products=products
        )
        next_cursor = _encode_cursor(docs[-1]["_id"]) if len(docs) == limit else None
        return ShadowPage(items=[shadow_view(d) for d in docs], next_cursor=next_cursor)

    async def dp_history(
        self,
        device_id: str,
        *,
        code: str | None,
        since_ms: int,
        until_ms: int | None,
        cursor: str | None,
        limit: int,
    ) -> HistoryPage:
        rows = await self.history.dp_history_page(
            device_id,
            code,
            since_ms=since_ms,
            until_ms=until_ms if until_ms is not None else _default_until_ms(),
            before=_time_cursor(cursor),
            limit=limit,
            now=self.clock(),
        )
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
            next_cursor=_next_time_cursor(rows, limit),
        )

    async def presence(
        self,
        device_id: str,
        *,
        since_ms: int,
        until_ms: int | None,
        cursor: str | None,
        limit: int,
    ) -> PresencePage:
        rows = await self.history.presence_page(
            device_id,
            since_ms=since_ms,
            until_ms=until_ms if until_ms is not None else _default_until_ms(),
            before=_time_cursor(cursor),
            limit=limit,
            now=self.clock(),
        )
        return PresencePage(
            items=[PresenceRow(online=r["online"], device_time_ms=r["t"]) for r in rows],
            next_cursor=_next_time_cursor(rows, limit),
        )


def _default_until_ms() -> int:
    return int(time.time() * 1000) + _DEFAULT_UNTIL_AHEAD_MS
