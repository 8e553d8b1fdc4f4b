"""Concurrent handling that keeps per-key order, bounded for the pool as a whole."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)


class KeyOrderedWorkers(Generic[T]):
    """`size` workers handling items at once, one item of a key at a time, in the order put.

    Each key with items waiting has a line of its own, and the keys take turns for the workers (a key goes
    to the back after each item), so a slow key occupies one worker and a hot key one worker at a time:
    neither holds up the other keys' items (two messages of one device are still never handled at the
    same time or out of order, which is what KeyShared promises per consumer). Items without a key are
    independent of each other and of every key.

    Memory is bounded for the pool, not per key: `put` waits only once `max_in_flight` items are waiting
    or being handled, whatever their keys. (A bounded queue per worker, chosen by a hash of the key,
    stopped the receive loop, and so every key, as soon as one key's queue filled up.)
    """

    def __init__(
        self, size: int, handle: Callable[[T], Awaitable[object]], *, max_in_flight: int | None = None
    ) -> None:
        if size < 1:
            raise ValueError(f"size must be at least 1, not {size}")
        bound = max_in_flight if max_in_flight is not None else 4 * size
        if bound < size:
            raise ValueError(f"max_in_flight ({bound}) must be at least size ({size})")
        self._size = size
        self._handle = handle
        self._max_in_flight = bound
        self._slots = asyncio.Semaphore(bound)
        self._lines: dict[object, deque[T]] = {}
        self._turns: asyncio.Queue[object] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        """Items put and not yet handled (waiting for a worker or in a handler)."""
        return self._in_flight

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._work()) for _ in range(self._size)]

    async def put(self, key: str, item: T) -> None:
        """Queue `item` behind the items of its key; waits while the pool holds `max_in_flight` items."""
        await self._slots.acquire()
        self._in_flight += 1
        turn: object = key if key else object()  # no key: a line of its own
        line = self._lines.get(turn)
        if line is None:
            self._lines[turn] = deque((item,))
            self._turns.put_nowait(turn)
        else:
            line.append(item)  # its key is waiting for a worker or being handled: it takes its turn then

    async def stop(self) -> None:
        """Cancel the workers; queued items are dropped (unacknowledged, so Pulsar redelivers them).

        Called from a handler (FastStream stops a subscriber on StopConsume), the calling worker is not
        cancelled: it ends once its handler returns.
        """
        current = asyncio.current_task()
        tasks, self._tasks = [t for t in self._tasks if t is not current], []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # A fresh pool: a cancelled worker finishing its item touches only the state it was started with.
        self._lines, self._turns = {}, asyncio.Queue()
        self._slots = asyncio.Semaphore(self._max_in_flight)
        self._in_flight = 0

    async def _work(self) -> None:
        lines, turns, slots = self._lines, self._turns, self._slots
        while slots is self._slots:  # stop() made a fresh pool: a worker that called it ends here
            turn = await turns.get()
            line = lines[turn]
            item = line.popleft()
            try:
                await self._handle(item)
            except Exception:
                # the subscriber settles its own errors; whatever else escapes must not end the worker
                log.exception("a worker's handler raised")
            finally:
                if slots is self._slots:
                    self._in_flight -= 1
                slots.release()
                if line:
                    turns.put_nowait(turn)
                else:
                    del lines[turn]
