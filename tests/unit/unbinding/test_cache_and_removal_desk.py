"""The per-process caches of authorization and limit lookups, and the simulator's removal desk (the ground
truth the e2e tests and the bench read)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from fleet_tuya_sim.domain.errors import CloudRefusal
from fleet_tuya_sim.domain.unbinding import RemovalDesk, RemovalFaults
from fleet_unbinding.adapters.cache import CachedAuthorizations, CachedLimits, TtlCache
from fleet_unbinding.domain import authorization as authz
from fleet_unbinding.domain.quota import QuotaScope, override
from tests.unit.unbinding.fakes import FakeAuthorizations, FakeLimits

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 29, 12, tzinfo=UTC)


class CountingAuthorizations(FakeAuthorizations):
    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    async def product(self, product_id: str) -> authz.ProductAuthorization:
        self.reads += 1
        return await super().product(product_id)


async def test_a_cached_product_is_read_once_per_ttl_and_dropped_by_this_process_s_own_append() -> None:
    store = CountingAuthorizations()
    cached = CachedAuthorizations(store, ttl_s=60)
    assert not (await cached.product("p1")).registered
    assert not (await cached.product("p1")).registered
    assert store.reads == 1
    record = authz.register(await cached.product("p1"), owner="brand", original_owner=None, actor="a", at=NOW)
    assert await cached.append(record)
    assert (await cached.product("p1")).may_unbind("brand")  # seen at once, not after the TTL
    assert store.reads == 2


async def test_limits_are_cached_and_a_new_override_applies_at_once() -> None:
    limits = CachedLimits(FakeLimits(), ttl_s=60)
    assert await limits.history(QuotaScope.ACCOUNT, "brand") == []
    o = override([], scope=QuotaScope.ACCOUNT, subject="brand", limit=7, reason="T-1", actor="admin", at=NOW)
    assert await limits.append(o)
    assert [x.limit for x in await limits.history(QuotaScope.ACCOUNT, "brand")] == [7]


async def test_ttl_zero_never_caches_and_entries_expire() -> None:
    now = [0.0]
    loads = []

    async def load() -> int:
        loads.append(1)
        return len(loads)

    cache: TtlCache[str, int] = TtlCache(5, clock=lambda: now[0])
    assert await cache.get("k", load) == 1
    assert await cache.get("k", load) == 1
    now[0] = 6
    assert await cache.get("k", load) == 2
    off: TtlCache[str, int] = TtlCache(0)
    assert await off.get("k", load) == 3
    assert await off.get("k", load) == 4


def test_the_removal_rate_is_enforced_and_refusals_do_nothing() -> None:
    desk = RemovalDesk()
    desk.configure(rate_per_s=10, burst=1, faults=RemovalFaults())
    admitted, codes = 0, set()
    for ms in range(0, 2000, 20):  # 100 attempts over 2 s
        try:
            desk.admit(f"d{ms}", ms)
        except CloudRefusal as e:
            codes.add(e.code)
            continue
        desk.removed(f"d{ms}", ms)
        admitted += 1
    assert codes == {1199}
    assert 19 <= admitted <= 21
    assert desk.max_rate() <= 11
    assert desk.truth()["removed_twice"] == []
    line = desk.timeline(1000)  # per second from the first removal: where the rate went
    assert (line["start_ms"], len(line["removed"])) == (0, 2)
    assert sum(line["removed"]) == admitted
    assert sum(line["refused"]) == 100 - admitted
    assert RemovalDesk().timeline()["removed"] == []


def test_planned_and_drawn_faults_and_the_lan_scan() -> None:
    desk = RemovalDesk()
    desk.configure(rate_per_s=0, burst=1, faults=RemovalFaults(offline_ratio=0.5), seed=4)
    desk.plan("d1", [1110, 2010])
    codes = []
    for _ in range(3):
        try:
            desk.admit("d1", 0)
            codes.append(0)
        except CloudRefusal as e:
            codes.append(e.code)
    assert codes[:2] == [1110, 2010]
    drawn = []
    for i in range(200):
        try:
            desk.admit(f"x{i}", 0)
        except CloudRefusal as e:
            drawn.append(e.code)
    assert set(drawn) == {2001}
    assert 70 < len(drawn) < 130
    desk.removed("d1", 5)
    desk.removed("d1", 9)
    assert desk.truth()["removed_twice"] == ["d1"]
    desk.attach("gw", ["a", "b"])
    desk.attach("gw", ["b", "c"])
    assert desk.lan_scan("gw") == ["a", "b", "c"]
    assert desk.lan_scan("other") == []
