"""In-memory implementations of pairing's ports (the adapter seam), for handler tests."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta

from pydantic import SecretStr

from fleet_contracts._base import Payload
from fleet_contracts.pairing import PairingMode
from fleet_pairing.domain.credentials import IssuedToken
from fleet_pairing.domain.session import BindingMode, PairingSession, SessionState, Transition
from fleet_pairing.ports import (
    BindingModes,
    Clock,
    DeviceOwners,
    IdempotencyConflict,
    IdGenerator,
    NewToken,
    SessionListing,
    SessionRepository,
    TokenResult,
    TuyaPairing,
)
from fleet_shared.tuya.errors import TuyaApiError, api_error

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


@dataclass
class FakeClock:
    at: datetime = T0

    def now(self) -> datetime:
        return self.at

    def advance(self, **kw: float) -> None:
        self.at += timedelta(**kw)


@dataclass
class SequentialIds:
    n: int = 0

    def new_session_id(self) -> str:
        self.n += 1
        return f"s{self.n}"


@dataclass
class FakeSessions:
    """Conditional writes on the version, unique token and idempotency key, events kept in write order."""

    rows: dict[str, PairingSession] = field(default_factory=dict)
    events: list[Payload] = field(default_factory=list)
    lost_races: int = 0  # the next N saves lose, as if another replica wrote first
    listings: list[dict[str, object]] = field(default_factory=list)  # the read side's queries, as asked

    async def add(self, opened: Transition) -> None:
        s = opened.session
        r = s.request
        for other in self.rows.values():
            if r.idempotency_key is not None and (other.request.owner_uid, other.request.idempotency_key) == (
                r.owner_uid,
                r.idempotency_key,
            ):
                raise IdempotencyConflict(other)
            if other.token == s.token:
                raise ValueError("duplicate token")
        self.rows[s.session_id] = s
        self.events.extend(opened.events)

    async def save(self, transition: Transition, expected_version: int) -> bool:
        s = transition.session
        current = self.rows.get(s.session_id)
        if current is None or current.version != expected_version:
            return False
        if self.lost_races:
            self.lost_races -= 1
            self.rows[s.session_id] = replace(current, version=current.version + 1)
            return False
        self.rows[s.session_id] = s
        self.events.extend(transition.events)
        return True

    async def get(self, session_id: str) -> PairingSession | None:
        return self.rows.get(session_id)

    async def by_token(self, token: str) -> PairingSession | None:
        return next((s for s in self.rows.values() if s.token == token), None)

    async def by_idempotency_key(self, owner_uid: str, key: str) -> PairingSession | None:
        return next(
            (
                s
                for s in self.rows.values()
                if (s.request.owner_uid, s.request.idempotency_key) == (owner_uid, key)
            ),
            None,
        )

    async def active(self, limit: int, *, after_id: str | None = None) -> list[PairingSession]:
        rows = sorted(
            (s for s in self.rows.values() if s.state is SessionState.ACTIVE), key=lambda s: s.session_id
        )
        return [s for s in rows if after_id is None or s.session_id > after_id][:limit]

    async def expiring(self, before: datetime, limit: int) -> list[PairingSession]:
        rows = [s for s in self.rows.values() if s.state is SessionState.ACTIVE and s.expires_at <= before]
        return sorted(rows, key=lambda s: s.expires_at)[:limit]

    async def with_pending_removals(self, limit: int) -> list[PairingSession]:
        return [s for s in self.rows.values() if s.pending_removals()][:limit]

    async def newest_first(
        self,
        *,
        owner_uid: str | None,
        home_id: str | None,
        state: SessionState | None,
        day: date | None,
        before: tuple[datetime, str] | None,
        limit: int,
    ) -> list[PairingSession]:
        asked = {"owner_uid": owner_uid, "home_id": home_id, "state": state, "day": day, "before": before}
        self.listings.append({**asked, "limit": limit})
        rows = [
            s
            for s in self.rows.values()
            if owner_uid in (None, s.request.owner_uid)
            and home_id in (None, s.request.home_id)
            and state in (None, s.state)
            and day in (None, s.issued_at.astimezone(UTC).date())
            and (before is None or (s.issued_at, s.session_id) < before)
        ]
        return sorted(rows, key=lambda s: (s.issued_at, s.session_id), reverse=True)[:limit]


@dataclass
class FakeOwners:
    owners: dict[str, tuple[str | None, datetime]] = field(default_factory=dict)
    released: dict[str, str | None] = field(default_factory=dict)

    async def owner_of(self, device_id: str, at: datetime | None = None) -> str | None:
        owner, when = self.owners.get(device_id, (None, T0))
        if owner is None and at is not None and when == at:
            return self.released.get(device_id)
        return owner

    async def record_bound(self, device_id: str, owner_uid: str, at: datetime) -> None:
        known = self.owners.get(device_id)
        if known is None or known[1] <= at:
            self.owners[device_id] = (owner_uid, at)

    async def record_released(self, device_id: str, at: datetime, owner_uid: str | None = None) -> None:
        known = self.owners.get(device_id)
        if known is None or known[1] < at:
            self.owners[device_id] = (None, at)
            self.released[device_id] = owner_uid


@dataclass
class FakeBindingModes:
    modes: dict[str, BindingMode] = field(default_factory=dict)

    def binding_mode(self, product_id: str | None) -> BindingMode | None:
        return self.modes.get(product_id) if product_id else None


@dataclass
class FakeTuya:
    lifetime: timedelta | None = timedelta(minutes=10)
    results: dict[str, TokenResult] = field(default_factory=dict)
    calls: list[dict[str, object]] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    removal_errors: list[Exception] = field(default_factory=list)
    result_errors: dict[str, Exception] = field(default_factory=dict)
    create_errors: list[Exception] = field(default_factory=list)  # the next token requests raise these
    n: int = 0

    async def create_token(
        self, *, owner_uid: str, home_id: str, time_zone_id: str, mode: PairingMode, device_uuid: str | None
    ) -> NewToken:
        await asyncio.sleep(0)  # a real call yields: lets concurrent requests interleave
        if self.create_errors:
            raise self.create_errors.pop(0)
        self.n += 1
        self.calls.append({"owner_uid": owner_uid, "home_id": home_id, "mode": mode, "uuid": device_uuid})
        return NewToken(IssuedToken("AY", f"tok{self.n:05d}", SecretStr(f"sec{self.n}")), self.lifetime)

    async def token_result(self, token: str) -> TokenResult:
        if token in self.result_errors:
            raise self.result_errors[token]
        return self.results.get(token, TokenResult((), ()))

    async def remove_device(self, device_id: str) -> bool:
        if self.removal_errors:
            raise self.removal_errors.pop(0)
        self.removed.append(device_id)
        return True


def tuya_error(code: int) -> TuyaApiError:
    return api_error(code, "refused")


def events_of(sessions: FakeSessions, kind: type[Payload]) -> Sequence[Payload]:
    return [e for e in sessions.events if isinstance(e, kind)]


def _fakes_implement_the_ports() -> None:
    # checked by mypy: each fake satisfies its port without casts or ignores
    _sessions: SessionRepository = FakeSessions()
    _listing: SessionListing = FakeSessions()
    _owners: DeviceOwners = FakeOwners()
    _modes: BindingModes = FakeBindingModes()
    _tuya: TuyaPairing = FakeTuya()
    _clock: Clock = FakeClock()
    _ids: IdGenerator = SequentialIds()
