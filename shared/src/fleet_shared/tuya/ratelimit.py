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
    """A token bucket kept as the time its next token is due (GCRA): calls go out on a schedule `1/rate`
    apart, and up to `burst - 1` of them may run ahead of it.

    The next slot follows the previous slot, not the moment its caller woke up: a sleep that overruns (a
    busy event loop) is made up by the next call's shorter wait, so a steady queue runs at `rate`, not below
    it. Callers take their slot one at a time, after the one before went out: after a stall of the event
    loop the queue does not leave as one burst (at most `burst` + 1 calls go out together).
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
        self._ahead = (limit.burst - 1) * self._interval  # how far calls may run ahead of the schedule
        self._next_due = clock()
        self._lock = asyncio.Lock()

    async def acquire(self) -> float:
        """Waits for the next slot; returns the seconds waited. FIFO through the lock."""
        async with self._lock:
            now = self._clock()
            due = max(self._next_due, now)  # an idle bucket saves up no more than `burst`
            self._next_due = due + self._interval
            wait = due - self._ahead - now
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
