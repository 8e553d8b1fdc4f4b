"""The publish pipeline: messages enter in the order the fleet produced them, pass the chaos stage
(duplicates, shuffles within a window), get their place in the ground truth, and go to the sink with a
bounded number of sends in flight. Sends start in publication order, so per-key order holds on the broker."""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from dataclasses import dataclass, field, replace

from fleet_tuya_sim.ports import PushSink
from fleet_tuya_sim.service_layer.truth import GroundTruth, MessageRecord

_log = logging.getLogger(__name__)


@dataclass
class ChaosSettings:
    duplicate_ratio: float = 0.0  # share of messages published twice (same bytes, same tid)
    shuffle_window: int = 0  # >1: messages are released in shuffled blocks of this size

    @property
    def active(self) -> bool:
        return self.duplicate_ratio > 0 or self.shuffle_window > 1


@dataclass
class Outgoing:
    record: MessageRecord
    payload: bytes = field(repr=False)
    properties: dict[str, str]


class PublishPipeline:
    def __init__(
        self,
        sink: PushSink,
        truth: GroundTruth,
        *,
        max_in_flight: int = 500,
        chaos: ChaosSettings | None = None,
        seed: int = 0,
    ) -> None:
        self.sink = sink
        self.truth = truth
        self.chaos = chaos or ChaosSettings()
        self._rng = random.Random(f"{seed}:chaos")
        self._window: list[Outgoing] = []
        self._queue: deque[Outgoing] = deque()
        self._slots = asyncio.Semaphore(max_in_flight)
        self._in_flight = 0
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._progress = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def backlog(self) -> int:
        return len(self._window) + len(self._queue) + self._in_flight

    def reseed(self, seed: int) -> None:
        self._rng = random.Random(f"{seed}:chaos")

    # -- entry ----------------------------------------------------------------------------------------

    def put(self, item: Outgoing) -> None:
        """Synchronous, so the order of `put` calls is the order the fleet produced the messages."""
        duplicate = None
        if self.chaos.duplicate_ratio > 0 and self._rng.random() < self.chaos.duplicate_ratio:
            duplicate = Outgoing(
                replace(item.record, duplicate_of=item.record.tid), item.payload, dict(item.properties)
            )
        if self.chaos.shuffle_window > 1:
            self._window.append(item)
            if duplicate is not None:
                self._window.append(duplicate)
            if len(self._window) >= self.chaos.shuffle_window:
                self.flush_window()
            return
        self._release(item)
        if duplicate is not None:
            self._release(duplicate)

    def flush_window(self) -> None:
        """Releases what the shuffle window holds, in shuffled order."""
        if not self._window:
            return
        window, self._window = self._window, []
        self._rng.shuffle(window)
        for item in window:
            self._release(item)

    def _release(self, item: Outgoing) -> None:
        item.record.seq = self.truth.next_seq()
        self.truth.record(item.record)
        self._queue.append(item)
        self._idle.clear()
        self._wakeup.set()

    # -- drain ----------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Drains the queue for ever (a background task; cancel to stop)."""
        while True:
            while not self._queue:
                if self._in_flight == 0:
                    self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
            await self._slots.acquire()
            item = self._queue.popleft()
            self._in_flight += 1
            # Tasks run in creation order and each calls the producer before its first await: sends reach
            # the client library in publication order.
            task = asyncio.create_task(self._send(item))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, item: Outgoing) -> None:
        try:
            item.record.message_id = await self.sink.send(item.record.key, item.payload, item.properties)
        except Exception as exc:  # a failed send is recorded, never fatal to the simulator
            item.record.error = type(exc).__name__
            _log.warning("publish of %s failed: %s", item.record.tid, type(exc).__name__)
        finally:
            self._in_flight -= 1
            self._slots.release()
            self._progress.set()
            if not self._queue and self._in_flight == 0:
                self._idle.set()

    async def wait_below(self, backlog: int) -> None:
        """Back-pressure for producers of messages: wait until the backlog is under `backlog`."""
        while len(self._queue) + self._in_flight >= backlog:
            self._progress.clear()
            await self._progress.wait()

    async def flush(self, within_s: float = 30.0) -> bool:
        """Releases the shuffle window and waits until everything was confirmed or failed."""
        self.flush_window()
        try:
            await asyncio.wait_for(self._idle.wait(), within_s)
        except TimeoutError:
            return False
        return True
