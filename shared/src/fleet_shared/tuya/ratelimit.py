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
        self._tokens = limit.burst
        self._updated = clock()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.limit.burst, self._tokens + (now - self._updated) * self.limit.rate)
        self._updated = now

    async def acquire(self) -> float:
        """Takes one token, waiting as needed; returns the seconds waited. FIFO through the lock."""
        waited = 0.0
        async with self._lock:
            while True:
                self._refill()
                if self._tokens >= 1:
                    self._tokens -= 1
                    return waited
                delay = (1 - self._tokens) / self.limit.rate
                waited += delay
                await self._sleep(delay)


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
