"""Concurrent handling that keeps per-key order: a key always goes to the same worker."""

from __future__ import annotations

import asyncio
import itertools
import zlib
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class KeyOrderedWorkers(Generic[T]):
    """`size` workers, each draining its own queue in order.

    A message with a key goes to the worker chosen by a stable hash of the key, so two messages of one
    device are never handled at the same time or out of order (what KeyShared promises per consumer);
    messages without a key are spread round-robin. Bounded queues push back on the receive loop.
    """

    def __init__(self, size: int, handle: Callable[[T], Awaitable[object]]) -> None:
        self._handle = handle
        self._queues: list[asyncio.Queue[T]] = [asyncio.Queue(maxsize=4) for _ in range(size)]
        self._round_robin = itertools.cycle(range(size))
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._work(q)) for q in self._queues]

    async def put(self, key: str, item: T) -> None:
        index = zlib.crc32(key.encode()) % len(self._queues) if key else next(self._round_robin)
        await self._queues[index].put(item)

    async def stop(self) -> None:
        """Cancel the workers; queued items are dropped (unacknowledged, so Pulsar redelivers them)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        for q in self._queues:
            while not q.empty():
                q.get_nowait()

    async def _work(self, queue: asyncio.Queue[T]) -> None:
        while True:
            item = await queue.get()
            await self._handle(item)
