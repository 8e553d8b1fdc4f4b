"""Daily unbinding quotas: per operator account and per product.

Rules (Tuya's guide, "Things to note"; the issue):
- Each operator account unbinds at most `limit` devices per day, and each product at most `limit` per day;
  both default to 100.
- A day is a UTC calendar day unless configured with an offset (e.g. +480 min counts China days).
- An administrator sets a different limit for one account or one product, with a reason (the ticket); each
  change is an append-only record; the latest one counts. Lowering a limit below what is used stops further
  unbinds that day, it never takes back units.
- A device's unbind takes one unit in both counters. Units are reserved in blocks: one conditional update
  per counter per block (`used <= limit - n`, `$inc used n`, the block listed with its size), handed out to
  devices by the process that reserved it, and settled when it closes (the units no device took are given
  back). A device holds its unit only once its own state write names the block, so a block's units in use
  are the devices that name it: after a crash, another worker settles the block by counting them.
- A unit refunded (the unbind did not take effect) is given back once, marked with its name (batch and
  device), so a refund repeated after a crash counts once.
- Never exceeded: every block is one conditional update; when the second counter refuses, the first
  counter's unit goes back to its block (compensation, in process).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum

DEFAULT_DAILY_LIMIT = 100
MAX_DAILY_LIMIT = 1_000_000


class QuotaScope(StrEnum):
    ACCOUNT = "account"
    PRODUCT = "product"


class QuotaError(ValueError):
    """A quota change that breaks a rule; nothing is recorded."""


@dataclass(frozen=True, slots=True)
class QuotaDay:
    """How days are counted: UTC days shifted by `utc_offset` (0: plain UTC days)."""

    utc_offset: timedelta = timedelta(0)

    def of(self, now: datetime) -> date:
        if now.tzinfo is None:
            raise ValueError("quota days need an aware datetime")
        return (now.astimezone(UTC) + self.utc_offset).date()

    def key(self, now: datetime) -> str:
        return self.of(now).isoformat()

    def resets_at(self, now: datetime) -> datetime:
        """When the day that contains `now` ends (the counters start again from zero)."""
        next_day = self.of(now) + timedelta(days=1)
        return datetime(next_day.year, next_day.month, next_day.day, tzinfo=UTC) - self.utc_offset


@dataclass(frozen=True, slots=True)
class CounterKey:
    scope: QuotaScope
    subject: str  # the account or the PID
    day: str  # ISO date

    @property
    def id(self) -> str:
        return f"{self.scope}|{self.day}|{self.subject}"


def unit_id(batch_id: str, device_id: str) -> str:
    """The name of one device's unit in a counter's refunds: refunding it twice counts once."""
    return f"{batch_id}/{device_id}"


def counter_keys(account: str, product_id: str, day: str) -> tuple[CounterKey, CounterKey]:
    """The counters a device's unbind takes a unit from, in the order they are reserved."""
    return CounterKey(QuotaScope.ACCOUNT, account, day), CounterKey(QuotaScope.PRODUCT, product_id, day)


@dataclass(frozen=True, slots=True)
class LimitOverride:
    """An administrator's limit for one account or product (append-only; the highest `seq` counts)."""

    scope: QuotaScope
    subject: str
    seq: int
    limit: int
    reason: str
    actor: str
    at: datetime


def override(
    current: Iterable[LimitOverride],
    *,
    scope: QuotaScope,
    subject: str,
    limit: int,
    reason: str,
    actor: str,
    at: datetime,
) -> LimitOverride:
    """The record of a new limit, following the subject's history `current`."""
    if not 0 <= limit <= MAX_DAILY_LIMIT:
        raise QuotaError(f"limit must be between 0 and {MAX_DAILY_LIMIT}")
    if not reason.strip():
        raise QuotaError("a limit change needs a reason (the ticket)")
    last = max((o.seq for o in current if o.scope is scope and o.subject == subject), default=0)
    return LimitOverride(scope, subject, last + 1, limit, reason.strip(), actor, at)


def limit_of(history: Iterable[LimitOverride], default: int = DEFAULT_DAILY_LIMIT) -> int:
    latest = max(history, key=lambda o: o.seq, default=None)
    return default if latest is None else latest.limit


@dataclass(frozen=True, slots=True)
class Usage:
    """One counter now (GET /quotas): `used`, the units devices took; `held`, units reserved in open blocks
    that no device took yet (being handed out by a live process, or left by a process that died: given
    back when the block is settled, at the latest once `held_until` passed); `remaining`, what can still
    be reserved now."""

    scope: QuotaScope
    subject: str
    day: str
    limit: int
    used: int
    resets_at: datetime
    held: int = 0
    held_until: datetime | None = None

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used - self.held)


@dataclass(frozen=True, slots=True)
class BlockGrant:
    """Units handed to one device: the block it came from in each counter, in `counter_keys` order."""

    keys: tuple[CounterKey, ...]
    blocks: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class OpenBlock:
    """A block listed in its counter: `n` units reserved, settled by anyone once `until` passed (the
    reserving process stops handing it out well before: see `QuotaAllocator`)."""

    key: CounterKey
    block_id: str
    n: int
    until: datetime


class Reservation(StrEnum):
    """What reserving one device's units in both counters came to."""

    RESERVED = "reserved"
    ACCOUNT_EXHAUSTED = "account_exhausted"
    PRODUCT_EXHAUSTED = "product_exhausted"
