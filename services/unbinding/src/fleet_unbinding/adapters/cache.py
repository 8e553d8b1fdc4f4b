"""Per-process caches of the lookups every device makes: a product's authorizations and a counter's limit.

A batch of 1,000 devices over a few products would otherwise fold the same authorization records and read
the same limit history a thousand times. Entries live `ttl_s`; this process's own appends drop the entry at
once, another replica's apply within `ttl_s` (the same bound as the API key cache). `ttl_s` 0: no caching.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from fleet_unbinding.domain.authorization import AuthorizationRecord, ProductAuthorization
from fleet_unbinding.domain.quota import LimitOverride, QuotaScope
from fleet_unbinding.ports import AuthorizationStore, QuotaLimits

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    def __init__(self, ttl_s: float, *, clock: Callable[[], float] = time.monotonic, size: int = 10_000):
        self.ttl_s = ttl_s
        self.clock = clock
        self.size = size
        self._entries: dict[K, tuple[float, V]] = {}

    async def get(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        now = self.clock()
        hit = self._entries.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        value = await load()
        if self.ttl_s > 0:
            if len(self._entries) >= self.size:
                self._entries.clear()  # crude but bounded: a full cache starts over
            self._entries[key] = (now + self.ttl_s, value)
        return value

    def drop(self, key: K) -> None:
        self._entries.pop(key, None)


class CachedAuthorizations:
    def __init__(self, store: AuthorizationStore, ttl_s: float) -> None:
        self.store = store
        self._cache: TtlCache[str, ProductAuthorization] = TtlCache(ttl_s)

    async def product(self, product_id: str) -> ProductAuthorization:
        return await self._cache.get(product_id, lambda: self.store.product(product_id))

    async def append(self, record: AuthorizationRecord) -> bool:
        self._cache.drop(record.product_id)
        appended = await self.store.append(record)
        self._cache.drop(record.product_id)
        return appended

    async def records(self, product_id: str) -> list[AuthorizationRecord]:
        return await self.store.records(product_id)


class CachedLimits:
    def __init__(self, limits: QuotaLimits, ttl_s: float) -> None:
        self.limits = limits
        self._cache: TtlCache[tuple[QuotaScope, str], list[LimitOverride]] = TtlCache(ttl_s)

    async def history(self, scope: QuotaScope, subject: str) -> list[LimitOverride]:
        return await self._cache.get((scope, subject), lambda: self.limits.history(scope, subject))

    async def append(self, override: LimitOverride) -> bool:
        key = (override.scope, override.subject)
        self._cache.drop(key)
        appended = await self.limits.append(override)
        self._cache.drop(key)
        return appended
