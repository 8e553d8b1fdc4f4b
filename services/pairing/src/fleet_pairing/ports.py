"""The ports the pairing handlers use: sessions, device owners, product binding modes, Tuya, the clock.

Adapters implement them for MongoDB and Tuya's OpenAPI; unit tests implement them with in-memory fakes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Protocol

from fleet_contracts.pairing import PairingMode
from fleet_pairing.domain.credentials import IssuedToken
from fleet_pairing.domain.session import BindingMode, PairingSession, SessionState, Transition


class IdempotencyConflict(Exception):
    """Another session already holds this idempotency key (a concurrent or repeated request)."""

    def __init__(self, existing: PairingSession) -> None:
        super().__init__(f"idempotency key already used by session {existing.session_id}")
        self.existing = existing


class SessionRepository(Protocol):
    """Pairing sessions, one document each; every write stores the transition's events in the same write."""

    async def add(self, opened: Transition) -> None:
        """Store a new session (version 1) with its events; `IdempotencyConflict` if the key is taken."""

    async def save(self, transition: Transition, expected_version: int) -> bool:
        """Store `transition.session` (its version already bumped) and its events, only if the stored
        version is still `expected_version`. False when another writer got there first."""

    async def get(self, session_id: str) -> PairingSession | None: ...

    async def by_token(self, token: str) -> PairingSession | None: ...

    async def by_idempotency_key(self, owner_uid: str, key: str) -> PairingSession | None: ...

    async def active(self, limit: int, *, after_id: str | None = None) -> list[PairingSession]:
        """Active sessions in id order (for polling Tuya's token result), starting after `after_id`."""

    async def expiring(self, before: datetime, limit: int) -> list[PairingSession]:
        """Active sessions whose token expired before `before`."""

    async def with_pending_removals(self, limit: int) -> list[PairingSession]: ...


class SessionListing(Protocol):
    """The read side of the HTTP API: one session, and sessions newest first (`issued_at`, then id, both
    descending) by the indexed filters."""

    async def get(self, session_id: str) -> PairingSession | None: ...

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
        """At most `limit` sessions matching every filter given (`day`: the UTC day of issue), all of them
        after the sort key `before` (`issued_at`, id) when given."""


class DeviceOwners(Protocol):
    """Who each device was last bound to, learned from the push stream (to see a rebind's previous owner)."""

    async def owner_of(self, device_id: str, at: datetime | None = None) -> str | None:
        """The device's owner; with `at` (a binding's push time), also the owner a release at exactly `at`
        took it from: a rebind reaches us as a release and a binding of the same instant."""

    async def record_bound(self, device_id: str, owner_uid: str, at: datetime) -> None:
        """Remember the owner unless a newer fact about the device is already known (a binding wins over a
        release of the same instant)."""

    async def record_released(self, device_id: str, at: datetime, owner_uid: str | None = None) -> None:
        """The device left its owner (`owner_uid`, when the push names it), unless a newer fact is known."""


class BindingModes(Protocol):
    """The binding mode of a product (strong / medium / weak); None when unknown."""

    def binding_mode(self, product_id: str | None) -> BindingMode | None: ...


@dataclass(frozen=True, slots=True)
class NewToken:
    issued: IssuedToken
    lifetime: timedelta | None  # Tuya's `expire_time`; None when Tuya did not say


@dataclass(frozen=True, slots=True)
class ActivatedDevice:
    device_id: str
    product_id: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class FailedDevice:
    code: str
    device_id: str | None = None
    name: str | None = None
    message: str | None = None


@dataclass(frozen=True, slots=True)
class TokenResult:
    """Tuya's view of a token: the devices that activated with it and those that failed."""

    success: Sequence[ActivatedDevice]
    failed: Sequence[FailedDevice]


class TuyaPairing(Protocol):
    """The Tuya OpenAPI calls pairing makes."""

    async def create_token(
        self, *, owner_uid: str, home_id: str, time_zone_id: str, mode: PairingMode, device_uuid: str | None
    ) -> NewToken: ...

    async def token_result(self, token: str) -> TokenResult: ...

    async def remove_device(self, device_id: str) -> bool:
        """Unbind the device from its account; raises a retryable error on transient failures."""


class Clock(Protocol):
    def now(self) -> datetime: ...


class IdGenerator(Protocol):
    def new_session_id(self) -> str: ...
