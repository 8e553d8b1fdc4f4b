"""KeyOrderedWorkers: per-key order, no head-of-line blocking between keys, one bound for the whole pool."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Iterable

import pytest

from fleet_shared.pulsar.workers import KeyOrderedWorkers

pytestmark = pytest.mark.unit

Item = tuple[str, int]


class Handler:
    """Handles items, holding back those of the keys in `held` until released; records what it did."""

    def __init__(self, held: Iterable[str] = ()) -> None:
        self.held = set(held)
        self.release = asyncio.Event()
        self.started: list[Item] = []
        self.done: list[Item] = []
        self.active: dict[str, int] = defaultdict(int)
        self.overlap: list[Item] = []

    async def __call__(self, item: Item) -> None:
        key = item[0]
        self.started.append(item)
        self.active[key] += 1
        if self.active[key] > 1 and key:
            self.overlap.append(item)
        try:
            if key in self.held:
                await self.release.wait()
            await asyncio.sleep(0)
        finally:
            self.active[key] -= 1
        self.done.append(item)

    def of(self, key: str) -> list[int]:
        return [n for k, n in self.done if k == key]


async def until(check: Callable[[], bool], within: float = 2.0) -> None:
    async with asyncio.timeout(within):
        while not check():  # noqa: ASYNC110 - polling state changed by the workers' tasks
            await asyncio.sleep(0.001)


async def test_a_slow_key_holds_up_no_other_key_until_the_pool_is_full() -> None:
    handler = Handler(held={"slow"})
    workers: KeyOrderedWorkers[Item] = KeyOrderedWorkers(2, handler, max_in_flight=32)
    workers.start()
    try:
        # More of the slow key than a worker queue of the old pool held (4 queued + 1 handled) ...
        for n in range(10):
            await asyncio.wait_for(workers.put("slow", ("slow", n)), 1)
        # ... and other keys behind them, some of which hashed to the slow key's worker in the old pool.
        for n in range(20):
            key = f"k{n % 5}"
            await asyncio.wait_for(workers.put(key, (key, n)), 1)
        await until(lambda: len(handler.done) == 20)

        assert handler.of("slow") == []
        assert workers.in_flight == 10
        handler.release.set()
        await until(lambda: len(handler.done) == 30)
    finally:
        await workers.stop()

    assert handler.of("slow") == list(range(10))
    assert all(handler.of(f"k{i}") == sorted(handler.of(f"k{i}")) for i in range(5))
    assert handler.overlap == []
    assert workers.in_flight == 0


async def test_put_waits_only_once_the_pool_holds_max_in_flight_items() -> None:
    handler = Handler(held={"a", "b", "c"})
    workers: KeyOrderedWorkers[Item] = KeyOrderedWorkers(2, handler, max_in_flight=5)
    workers.start()
    try:
        for n, key in enumerate("aabcc"):  # 2 being handled, 3 waiting: the bound, across three keys
            await asyncio.wait_for(workers.put(key, (key, n)), 1)
        assert workers.in_flight == 5
        blocked = asyncio.create_task(workers.put("d", ("d", 5)))
        await asyncio.sleep(0.05)
        assert not blocked.done(), "a put went past the pool's bound"

        handler.release.set()
        await asyncio.wait_for(blocked, 1)
        await until(lambda: len(handler.done) == 6)
    finally:
        await workers.stop()
    assert workers.in_flight == 0


async def test_keys_take_turns_so_a_hot_key_does_not_starve_a_cold_one() -> None:
    handler = Handler()
    workers: KeyOrderedWorkers[Item] = KeyOrderedWorkers(1, handler, max_in_flight=100)
    for n in range(10):
        await workers.put("hot", ("hot", n))
    await workers.put("cold", ("cold", 0))
    workers.start()
    try:
        await until(lambda: len(handler.done) == 11)
    finally:
        await workers.stop()

    assert handler.done.index(("cold", 0)) == 1  # right after the hot key's first item, not its tenth
    assert handler.of("hot") == list(range(10))


async def test_one_item_of_a_key_at_a_time_in_order_while_keys_run_in_parallel() -> None:
    handler = Handler()
    workers: KeyOrderedWorkers[Item] = KeyOrderedWorkers(4, handler, max_in_flight=8)
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, sum(handler.active.values()))
            await asyncio.sleep(0)

    watcher = asyncio.create_task(watch())
    workers.start()
    try:
        for n in range(400):
            key = "hot" if n % 2 else f"k{n % 7}"
            await workers.put(key, (key, n))
        await until(lambda: len(handler.done) == 400)
    finally:
        watcher.cancel()
        await workers.stop()

    assert handler.overlap == []
    for key in {k for k, _ in handler.done}:
        assert handler.of(key) == sorted(handler.of(key)), f"{key} handled out of order"
    assert peak > 1


async def test_items_without_a_key_are_handled_at_once() -> None:
    handler = Handler(held={""})
    workers: KeyOrderedWorkers[Item] = KeyOrderedWorkers(3, handler, max_in_flight=3)
    workers.start()
    try:
        for n in range(3):
            await workers.put("", ("", n))
        await until(lambda: len(handler.started) == 3)  # all three in a handler together
        handler.release.set()
        await until(lambda: len(handler.done) == 3)
    finally:
        await workers.stop()


async def test_a_handler_that_raises_does_not_end_its_worker() -> None:
    done: list[int] = []

    async def handle(item: Item) -> None:
        if item[1] == 0:
            raise RuntimeError("boom")
        done.append(item[1])

    workers: KeyOrderedWorkers[Item] = KeyOrderedWorkers(1, handle, max_in_flight=4)
    workers.start()
    try:
        for n in range(3):
            await workers.put("k", ("k", n))
        await until(lambda: done == [1, 2])
    finally:
        await workers.stop()
    assert workers.in_flight == 0


async def test_stop_from_inside_a_handler_returns_and_drops_what_waits() -> None:
    stopped = asyncio.Event()
    handled: list[int] = []
    workers: KeyOrderedWorkers[Item]

    async def handle(item: Item) -> None:
        handled.append(item[1])
        await workers.stop()  # as FastStream's StopConsume does from a handler
        stopped.set()

    workers = KeyOrderedWorkers(2, handle, max_in_flight=4)
    workers.start()
    for n in range(3):
        await workers.put("k", ("k", n))
    await asyncio.wait_for(stopped.wait(), 1)
    await asyncio.sleep(0.01)

    assert handled == [0]
    assert workers.in_flight == 0


def test_the_bound_must_hold_at_least_one_item_per_worker() -> None:
    with pytest.raises(ValueError, match="max_in_flight"):
        KeyOrderedWorkers(4, Handler(), max_in_flight=3)
    with pytest.raises(ValueError, match="size"):
        KeyOrderedWorkers(0, Handler())
