"""Client-side token buckets per Tuya API (Tuya limits per project and per API, REFERENCE §4)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class RateLimit:
    """`rate` requests per second on average, bursts of up to `burst`."""

    rate: float
    burst: float = 1.0

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")


class TokenBucket:
    """A token bucket kept as the time its next token is due (GCRA): each caller takes the next free slot,
    `1/rate` after the previous one, and at most `burst` slots may lie in the past.

    Slots are handed out from the schedule, not from when a waiter wakes up: a sleep that overruns (a busy
    event loop) does not push every later call back, so a steady queue of callers runs at `rate`, not below
    it. It never runs above it either: the n-th call of a queue is due `(n - burst) / rate` after the first.
    """

    def __init__(
        self,
        limit: RateLimit,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.limit = limit
        self._clock = clock
        self._sleep = sleep
        self._interval = 1.0 / limit.rate
        self._next_due = clock()  # the theoretical time of the next call, if the bucket never ran full

    async def acquire(self) -> float:
        """Takes the next slot, waiting until it is due; returns the seconds waited. First come, first served:
        the slot is taken before the wait, so callers keep their order."""
        now = self._clock()
        due = max(self._next_due, now)
        self._next_due = due + self._interval
        # up to `burst - 1` calls may go ahead of the schedule (the bucket's stock)
        wait = due - (self.limit.burst - 1) * self._interval - now
        if wait <= 0:
            return 0.0
        await self._sleep(wait)
        return wait


class RateLimiter:
    """Buckets keyed by `"METHOD /path/{template}"`; a limit configured under the bare template applies to
    every method of it; everything else shares nothing and uses `default` (None: unlimited)."""

    def __init__(
        self,
        limits: Mapping[str, RateLimit] | None = None,
        *,
        default: RateLimit | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._limits = dict(limits or {})
        self._default = default
        self._clock = clock
        self._sleep = sleep
        self._buckets: dict[str, TokenBucket] = {}

    def _limit_for(self, method: str, path_template: str) -> tuple[str, RateLimit | None]:
        key = f"{method.upper()} {path_template}"
        if key in self._limits:
            return key, self._limits[key]
        if path_template in self._limits:
            return path_template, self._limits[path_template]
        return key, self._default

    async def acquire(self, method: str, path_template: str) -> float:
        key, limit = self._limit_for(method, path_template)
        if limit is None:
            return 0.0
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(limit, clock=self._clock, sleep=self._sleep)
        return await bucket.acquire()
