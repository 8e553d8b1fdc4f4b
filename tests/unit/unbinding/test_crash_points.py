"""Crash anywhere, restart, and the invariants hold: the process is killed at every store write, counter
operation (quota block reserved or settled, refund) and Tuya removal of a batch (before or after it lands),
then a new process recovers.

Invariants: every device has exactly one result; no device is removed twice; the counters equal the devices
unbound; no refusal keeps a unit."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import TypeVar

import pytest

from fleet_contracts.unbinding import RequestUnbindBatch, UnbindMode
from fleet_unbinding.domain import authorization as authz
from fleet_unbinding.domain.quota import CounterKey, QuotaScope
from fleet_unbinding.domain.unbind import DeviceUnbind, UnbindState
from fleet_unbinding.ports import OutboxEntry
from fleet_unbinding.service_layer import handlers as h
from tests.unit.unbinding.fakes import T0, FakeCounters, FakeTuya, FakeUnbindStore, World, world

pytestmark = pytest.mark.unit

R = TypeVar("R")
DAY = "2026-11-29"


class Crash(BaseException):
    """The process died (BaseException: no handler may swallow it)."""


class Fuse:
    def __init__(self, at: int | None, after: bool) -> None:
        self.at, self.after, self.count = at, after, 0

    async def run(self, op: Callable[[], Awaitable[R]]) -> R:
        self.count += 1
        if self.count == self.at and not self.after:
            raise Crash
        try:
            return await op()
        finally:
            if self.count == self.at and self.after:
                raise Crash  # the process dies whatever the operation answered


class CrashingUnbinds(FakeUnbindStore):
    def __init__(self, fuse: Fuse) -> None:
        super().__init__()
        self.fuse = fuse

    async def save(self, unbind: DeviceUnbind, outbox: Sequence[OutboxEntry]) -> bool:
        return await self.fuse.run(lambda: super(CrashingUnbinds, self).save(unbind, outbox))


class CrashingCounters(FakeCounters):
    def __init__(self, fuse: Fuse) -> None:
        super().__init__()
        self.fuse = fuse

    async def reserve_block(
        self, key: CounterKey, limit: int, want: int, block_id: str, until: datetime
    ) -> int:
        return await self.fuse.run(
            lambda: super(CrashingCounters, self).reserve_block(key, limit, want, block_id, until)
        )

    async def settle(self, key: CounterKey, block_id: str, n: int, consumed: int) -> None:
        await self.fuse.run(lambda: super(CrashingCounters, self).settle(key, block_id, n, consumed))

    async def refund(self, keys: Sequence[CounterKey], unit: str) -> None:
        await self.fuse.run(lambda: super(CrashingCounters, self).refund(keys, unit))


class CrashingTuya(FakeTuya):
    fuse: Fuse = Fuse(None, False)

    async def remove(self, device_id: str, *, reset: bool) -> None:
        await self.fuse.run(lambda: super(CrashingTuya, self).remove(device_id, reset=reset))


def crashing_world(fuse: Fuse) -> World:
    w = world()
    unbinds, counters, tuya = CrashingUnbinds(fuse), CrashingCounters(fuse), CrashingTuya()
    tuya.fuse = fuse
    w.unbinds, w.counters, w.tuya = unbinds, counters, tuya
    w.ports.unbinds, w.ports.counters, w.ports.devices = unbinds, counters, tuya
    w.ports.device_concurrency = 1
    w.ports.quota_block_size = 2  # blocks used up, closed and reserved again within the batch
    w.ports.new_process()
    return w


async def scenario(w: World) -> None:
    await h.manage_authorization(
        w.ports, "p1", lambda s: authz.register(s, owner="op", original_owner=None, actor="op", at=T0)
    )
    await h.set_limit(w.ports, QuotaScope.PRODUCT, "p1", limit=3, reason="T-1", actor="admin")
    for d in ("d1", "d2", "d3", "d4", "d5"):
        w.tuya.add(d, "p1")
    w.tuya.remove_script["d2"] = ["2001"]  # offline: refused, refunded
    w.tuya.remove_script["d3"] = ["lost"]  # unbound, answer lost
    request = RequestUnbindBatch(
        batch_id="b1", operator_id="op", mode=UnbindMode.LIST, device_ids=["d1", "d2", "d3", "d4", "d5"]
    )
    await h.request_batch(w.ports, request)
    await h.run_batch(w.ports, "b1")


def count_operations() -> int:
    fuse = Fuse(None, False)
    asyncio.run(scenario(crashing_world(fuse)))
    return fuse.count


OPERATIONS = count_operations()


@pytest.mark.parametrize("after", [False, True], ids=["before", "after"])
@pytest.mark.parametrize("crash_at", range(1, OPERATIONS + 1))
async def test_a_crash_at_any_operation_is_recovered_exactly(crash_at: int, after: bool) -> None:
    fuse = Fuse(crash_at, after)
    w = crashing_world(fuse)
    with pytest.raises(Crash):
        await scenario(w)
    fuse.at = None  # the new process
    w.ports.new_process()
    w.clock.advance(seconds=36)  # past the lease of an intent and the `until` of blocks the dead one left
    await h.recover(w.ports)

    devices = w.unbinds.of("b1")
    assert set(devices) == {"d1", "d2", "d3", "d4", "d5"}
    assert all(u.state.final for u in devices.values())
    assert all(n == 1 for n in w.tuya.removals.values())
    unbound = {d for d, u in devices.items() if u.state is UnbindState.UNBOUND}
    assert unbound == set(w.tuya.removals)
    assert len(unbound) <= 3
    for key in (CounterKey(QuotaScope.PRODUCT, "p1", DAY), CounterKey(QuotaScope.ACCOUNT, "op", DAY)):
        assert await w.counters.used(key) == len(unbound)
    assert not any(u.units_held for u in devices.values() if u.state is UnbindState.REFUSED)
    assert await w.counters.open_blocks() == []  # every block settled
    batch = await w.batches.get("b1")
    assert batch is not None
    assert batch.status.value == "finished"
    assert len([e for entries in w.unbinds.outbox.values() for e in entries]) == 5  # one result event each
