"""The quota block allocator against the in-memory counters: blocks sized by what is left, units given back
to the block or settled exactly, waiting for units in flight before refusing, idle and expired blocks."""

from __future__ import annotations

import asyncio

import pytest

from fleet_unbinding.domain.quota import BlockGrant, CounterKey, QuotaScope, Reservation
from fleet_unbinding.service_layer.quota_blocks import QuotaAllocator
from tests.unit.unbinding.fakes import FakeClock, FakeCounters

pytestmark = pytest.mark.unit

ACCOUNT = CounterKey(QuotaScope.ACCOUNT, "op", "2026-11-29")
PRODUCT = CounterKey(QuotaScope.PRODUCT, "p1", "2026-11-29")


def allocator(counters: FakeCounters, clock: FakeClock, block_size: int = 4) -> QuotaAllocator:
    return QuotaAllocator(counters, clock, block_size=block_size)


async def grant(a: QuotaAllocator, account_limit: int = 100, product_limit: int = 100) -> BlockGrant:
    g = await a.take([(ACCOUNT, account_limit), (PRODUCT, product_limit)])
    assert isinstance(g, BlockGrant)
    return g


async def test_one_block_serves_several_devices_and_settles_exactly_what_they_took() -> None:
    counters, clock = FakeCounters(), FakeClock()
    a = allocator(counters, clock)
    grants = [await grant(a) for _ in range(3)]
    assert len({g.blocks for g in grants}) == 1  # the same two blocks
    assert counters.writes == 2
    await a.release(grants[0], consumed=True)
    await a.release(grants[1], consumed=False)  # lost its race: the unit goes back to the block
    again = await grant(a)
    assert again.blocks == grants[0].blocks
    await a.release(grants[2], consumed=True)
    await a.release(again, consumed=True)
    assert await counters.used(ACCOUNT) == 4  # the whole block, until it closes
    await a.close_idle(everything=True)
    assert await counters.used(ACCOUNT) == 3
    assert await counters.used(PRODUCT) == 3
    assert await counters.open_blocks() == []


async def test_blocks_never_pass_the_limit_and_a_full_counter_refuses() -> None:
    counters, clock = FakeCounters(), FakeClock()
    a = allocator(counters, clock)
    grants = [await grant(a, product_limit=5) for _ in range(5)]
    assert await counters.used(PRODUCT) == 5  # 4, then the 1 left
    for g in grants:
        await a.release(g, consumed=True)
    assert await a.take([(ACCOUNT, 100), (PRODUCT, 5)]) is Reservation.PRODUCT_EXHAUSTED
    await a.close_idle(everything=True)
    assert (await counters.used(ACCOUNT), await counters.used(PRODUCT)) == (5, 5)


async def test_a_taker_waits_for_a_unit_in_flight_and_gets_it_when_it_comes_back() -> None:
    counters, clock = FakeCounters(), FakeClock()
    a = allocator(counters, clock)
    first = await grant(a, product_limit=1)
    second = asyncio.create_task(a.take([(ACCOUNT, 100), (PRODUCT, 1)]))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert not second.done()  # the only unit is in flight: not refused yet
    await a.release(first, consumed=False)  # its device lost its race
    got = await asyncio.wait_for(second, 1)
    assert isinstance(got, BlockGrant)
    await a.release(got, consumed=True)
    third = await asyncio.wait_for(a.take([(ACCOUNT, 100), (PRODUCT, 1)]), 1)
    assert third is Reservation.PRODUCT_EXHAUSTED  # nothing in flight any more: a real refusal
    await a.close_idle(everything=True)
    assert await counters.used(PRODUCT) == 1
    assert await counters.used(ACCOUNT) == 1  # the refused taker's account unit went back


async def test_an_unknown_write_leaves_its_block_to_settlement_by_count() -> None:
    counters, clock = FakeCounters(), FakeClock()
    a = allocator(counters, clock)
    g = await grant(a)
    await a.release(g, consumed=None)
    await a.close_idle(everything=True)
    assert {b.block_id for b in await counters.open_blocks()} == set(g.blocks)
    assert not any(a.tracks(b) for b in g.blocks)  # handlers.settle_abandoned_blocks takes it from here


async def test_idle_and_expired_blocks_close() -> None:
    counters, clock = FakeCounters(), FakeClock()
    a = allocator(counters, clock)
    g = await grant(a)
    await a.release(g, consumed=True)
    await a.close_idle()
    assert len(await counters.open_blocks()) == 2  # used a moment ago
    clock.advance(seconds=2)
    await a.close_idle()
    assert await counters.open_blocks() == []
    assert await counters.used(ACCOUNT) == 1
    g1 = await grant(a)
    clock.advance(seconds=6)  # past the hand-out window: the next taker gets a new block
    g2 = await grant(a)
    assert set(g1.blocks).isdisjoint(g2.blocks)
    await a.release(g1, consumed=True)
    await a.release(g2, consumed=True)
    await a.close_idle(everything=True)
    assert await counters.used(ACCOUNT) == 3
