"""Read models for the HTTP API: one session with its devices, and session listings with cursor paging.

Listings are newest first (`issued_at`, then id, both descending) and filter on at most the indexed fields
(owner, home, state, UTC day of issue); the cursor is the last row's sort key, so pages stay stable while new
sessions are opened. Nothing here holds a secret: the stored documents have none.
"""

from __future__ import annotations

import base64
import binascii
from datetime import date, datetime

import orjson
from pydantic import BaseModel, ConfigDict, Field

from fleet_contracts.pairing import PairingMode, PairingSessionState, UnexpectedProductPolicy
from fleet_pairing.domain.session import DeviceOutcome, OutcomeKind, PairingSession
from fleet_pairing.ports import SessionListing

MAX_PAGE = 200


class InvalidCursor(ValueError):
    def __init__(self) -> None:
        super().__init__("cursor: not a cursor this API returned")


class _View(BaseModel):
    model_config = ConfigDict(frozen=True)


class FailureView(_View):
    code: str = Field(description="Tuya's code as sent, e.g. `3`, `106`, `113`.")
    cause: str = Field(description="Typed cause, e.g. `wrong_wifi_password`, `bound_to_another_account`.")
    description: str
    hint: str | None = None


class DeviceView(_View):
    key: str = Field(description="Device id, or name and code for a failure Tuya reported without an id.")
    device_id: str | None
    product_id: str | None
    name: str | None
    outcome: OutcomeKind
    at: datetime = Field(description="When it activated or failed, as far as known.")
    source: str = Field(description="`push` (message stream) or `poll` (Tuya's token result).")
    failure: FailureView | None = None
    previous_owner_uid: str | None = None
    removal: str | None = Field(
        default=None, description="Unexpected product: `pending`, `done` or `failed`."
    )


class Counts(_View):
    paired: int
    failed: int
    unexpected_product: int
    late: int


class SessionView(_View):
    session_id: str
    state: PairingSessionState
    owner_uid: str
    home_id: str
    mode: PairingMode
    time_zone_id: str
    expected_devices: int
    device_uuids: list[str]
    allowed_products: list[str] | None
    unexpected_policy: UnexpectedProductPolicy
    region: str
    token: str = Field(description="Tuya's bare token (what its messages quote); never the assembled token.")
    issued_at: datetime
    expires_at: datetime
    ended_at: datetime | None
    counts: Counts
    devices: list[DeviceView]


class SessionPage(_View):
    items: list[SessionView]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last one.")


def _device(o: DeviceOutcome) -> DeviceView:
    f = o.failure
    return DeviceView(
        key=o.key,
        device_id=o.device_id,
        product_id=o.product_id,
        name=o.name,
        outcome=o.kind,
        at=o.at,
        source=o.source.value,
        failure=FailureView(code=f.code, cause=f.cause.value, description=f.description, hint=f.hint)
        if f
        else None,
        previous_owner_uid=o.previous_owner_uid,
        removal=o.removal.value if o.removal else None,
    )


def session_view(s: PairingSession) -> SessionView:
    r = s.request
    return SessionView(
        session_id=s.session_id,
        state=s.state,
        owner_uid=r.owner_uid,
        home_id=r.home_id,
        mode=r.mode,
        time_zone_id=r.time_zone_id,
        expected_devices=r.expected_devices,
        device_uuids=list(r.device_uuids),
        allowed_products=sorted(r.allowed_products) if r.allowed_products is not None else None,
        unexpected_policy=r.unexpected_policy,
        region=s.region,
        token=s.token,
        issued_at=s.issued_at,
        expires_at=s.expires_at,
        ended_at=s.ended_at,
        counts=Counts(
            paired=s.count(OutcomeKind.PAIRED),
            failed=s.count(OutcomeKind.FAILED),
            unexpected_product=s.count(OutcomeKind.UNEXPECTED_PRODUCT),
            late=s.count(OutcomeKind.LATE),
        ),
        devices=[_device(o) for o in s.outcomes],
    )


def encode_cursor(issued_at: datetime, session_id: str) -> str:
    raw = orjson.dumps([issued_at.isoformat(), session_id])
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        issued, session_id = orjson.loads(raw)
        at = datetime.fromisoformat(issued)
        if not isinstance(session_id, str) or at.tzinfo is None:
            raise InvalidCursor
        return at, session_id
    except (binascii.Error, ValueError, TypeError, orjson.JSONDecodeError):
        raise InvalidCursor from None


class PairingViews:
    """The HTTP API's queries over the sessions' read side (`SessionListing`)."""

    def __init__(self, sessions: SessionListing) -> None:
        self.sessions = sessions

    async def session(self, session_id: str) -> SessionView | None:
        found = await self.sessions.get(session_id)
        return session_view(found) if found is not None else None

    async def page(
        self,
        *,
        owner_uid: str | None = None,
        home_id: str | None = None,
        state: PairingSessionState | None = None,
        day: date | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> SessionPage:
        """Sessions newest first, filtered by any of owner, home, state and UTC day of issue. Raises
        `InvalidCursor` (nothing read) for a cursor this API did not hand out."""
        if not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"limit: must be 1-{MAX_PAGE}")
        before = decode_cursor(cursor) if cursor is not None else None
        found = await self.sessions.newest_first(
            owner_uid=owner_uid, home_id=home_id, state=state, day=day, before=before, limit=limit + 1
        )
        rows = [session_view(s) for s in found[:limit]]
        more = len(found) > limit
        next_cursor = encode_cursor(rows[-1].issued_at, rows[-1].session_id) if more else None
        return SessionPage(items=rows, next_cursor=next_cursor)
