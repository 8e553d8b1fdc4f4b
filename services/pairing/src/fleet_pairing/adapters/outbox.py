"""The outbox relay: publishes the events a session write recorded, then clears exactly those entries.

Right after a write, `relay` publishes the document's whole outbox in order (leftovers of an earlier failed
relay first, then the write's own events); whatever it could not publish (broker down, crash) stays in the
document for the next write or `sweep`, with the same ids (consumers de-duplicate on them).

A clear empties the outbox only while the document is still at the version relayed (then it holds exactly
what was published) and unsets `outbox_at` with it. If a newer write appended meanwhile, that write's relay
publishes the whole outbox again and clears it; so the flag is set exactly while events wait, and the
sweep reads only those sessions, from the `outbox_at` index, once they are `grace` old (younger ones are
still being relayed by the process that wrote them, maybe another replica). At start and after a drain the
sweep takes every waiting session (`grace=0`).

Clearing is grouped: one clearing write at a time, and the entries relayed while it runs are cleared
together by the next one (one `update` command of up to `clear_batch` statements). A burst of session writes
then costs one clearing write per batch instead of one per session, where every write (on the local server,
serialised across all connections) is what a push waits behind. A crash before the clear only means the
sweep publishes those entries once more, with the same ids, as it would have without grouping.

The service relays in the background (`relay_later`): a writer moves on once its write is durable (the
events are in the document), so a device event is acknowledged after its session and owner writes without
waiting for Pulsar and the clearing write, which otherwise held each consumer worker for a publish and a
place in the clearing queue. `drain` waits for those relays on shutdown; the sweep covers a crash.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from fleet_contracts.outbox import OutboxEntry
from fleet_pairing.adapters.mongo import SessionStore

log = logging.getLogger(__name__)

CLEAR_BATCH = 64  # statements per clearing command: the local server's front refuses bigger update commands
MAX_BACKGROUND = 512  # relays under way at once; a writer waits for a place beyond that (a slow broker)
GRACE = timedelta(seconds=10)  # a write's own relay normally ends within this; the sweep takes older ones


class EventPublisher(Protocol):
    async def publish(self, entries: Sequence[OutboxEntry]) -> None:
        """Publish every entry and return once Pulsar has persisted them all (raise if any failed).

        `fleet_shared.pulsar.OutboxPublisher` in production; tests pass their own."""


@dataclass
class _Relayed:
    session_id: str
    version: int
    cleared: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class OutboxRelay:
    def __init__(
        self,
        store: SessionStore,
        publisher: EventPublisher,
        *,
        clear_batch: int = CLEAR_BATCH,
        max_background: int = MAX_BACKGROUND,
        grace: timedelta = GRACE,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if not 1 <= clear_batch <= CLEAR_BATCH:
            raise ValueError(f"clear_batch must be 1-{CLEAR_BATCH}")
        self.store = store
        self.publisher = publisher
        self.clear_batch = clear_batch
        self.grace = grace
        self.clock = clock
        self._waiting: list[_Relayed] = []
        self._clearing = asyncio.Lock()
        self._places = asyncio.Semaphore(max_background)
        self._background: set[asyncio.Task[None]] = set()
        self._relaying: Counter[str] = Counter()  # sessions with a relay under way: the sweep leaves them

    async def relay_later(self, session_id: str, version: int, entries: Sequence[OutboxEntry]) -> None:
        """`relay` in a task of its own; returns at once unless `max_background` relays are under way.
        A failure leaves the entries in the outbox for the sweep (logged)."""
        await self._places.acquire()
        self._relaying[session_id] += 1
        task = asyncio.create_task(self._relay_in_background(session_id, version, entries))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _relay_in_background(
        self, session_id: str, version: int, entries: Sequence[OutboxEntry]
    ) -> None:
        try:
            await self.relay(session_id, version, entries)
        except Exception as e:  # the clearing write failed: the entries stay for the sweep
            log.warning(
                "outbox clear failed; left for the sweep", extra={"session_id": session_id, "error": repr(e)}
            )
        finally:
            self._relaying[session_id] -= 1
            if not self._relaying[session_id]:
                del self._relaying[session_id]
            self._places.release()

    async def drain(self) -> None:
        """Wait for every background relay under way (shutdown)."""
        while self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    async def abandon(self) -> None:
        """Cancel the background relays still under way (stopping after a drain that timed out): their
        entries stay in the outbox for the next process's sweep."""
        tasks = list(self._background)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def relay(self, session_id: str, version: int, entries: Sequence[OutboxEntry]) -> None:
        """Publish the outbox written at `version` and clear it; a publish failure is logged and left to the
        sweep (the write itself stands). Returns once cleared; a failed clear raises (left for the sweep)."""
        try:
            await self.publisher.publish(entries)
        except Exception as e:  # any publish failure: the events are durable in the outbox, the sweep retries
            log.warning(
                "outbox relay failed; left for the sweep", extra={"session_id": session_id, "error": repr(e)}
            )
            return
        await self._clear(session_id, version)

    async def _clear(self, session_id: str, version: int) -> None:
        mine = _Relayed(session_id, version)
        self._waiting.append(mine)
        while not mine.cleared.done():
            async with self._clearing:
                if not mine.cleared.done():  # not taken by the write that held the lock before
                    await self._clear_next_batch()
        await mine.cleared

    async def _clear_next_batch(self) -> None:
        batch, self._waiting = self._waiting[: self.clear_batch], self._waiting[self.clear_batch :]
        try:
            await self.store.clear_outboxes([(r.session_id, r.version) for r in batch])
        except BaseException as e:  # each waiter raises it (its entries stay for the sweep)
            # cancelled (shutdown) too: the waiters of this batch must not wait for a clear that never comes
            failure = e if isinstance(e, Exception) else RuntimeError("the clearing write was cancelled")
            for r in batch:
                if not r.cleared.done():
                    r.cleared.set_exception(failure)
            if not isinstance(e, Exception):
                raise
            return
        for r in batch:
            r.cleared.set_result(None)

    async def sweep(self, limit: int = 100, *, grace: timedelta | None = None) -> int:
        """Publish what earlier relays left behind in outboxes written at least `grace` ago (the relay's
        own grace when not given); returns how many entries were relayed."""
        written_before = self.clock() - (self.grace if grace is None else grace)
        relayed = 0
        for left in await self.store.unrelayed(limit, written_before=written_before):
            if left.session_id in self._relaying:  # its relay is under way: publishing now only duplicates
                continue
            if left.entries:
                await self.publisher.publish(left.entries)
            await self._clear(left.session_id, left.version)
            relayed += len(left.entries)
        return relayed
