"""The outbox relay: publishes the events ota's writes recorded and applies their counter deltas exactly once,
then clears them. Safe to kill at any point, and to run in several replicas at once.

Per document with a non-empty outbox: (1) apply its counter deltas (`ProgressStore.apply`: at most once per
entry id, remembered in the counter document), (2) publish its events (deterministic ids: consumers drop
duplicates), (3) remove exactly those entries from the outbox, and drop the relay flag if nothing newer
arrived. A crash anywhere repeats (1)-(2) harmlessly on the next pass. `sweep` forgets remembered ids once
their entries are gone and they are older than `grace`; a pass skips any document it read more than half the
grace ago, so no stale read can apply a forgotten id again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from fleet_ota.adapters.mongo import Collection, ProgressStore
from fleet_ota.ports import CountedEntry, EventPublisher
from fleet_shared import mongo


class OutboxRelay:
    def __init__(
        self,
        collections: Sequence[Collection],
        progress: ProgressStore,
        publisher: EventPublisher,
        *,
        grace_s: float = 60.0,
        concurrency: int = 16,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.collections = collections
        self.progress = progress
        self.publisher = publisher
        self.grace_s = grace_s
        self.concurrency = concurrency
        self.clock = clock

    async def relay_once(self, limit: int = 500) -> int:
        """Relay up to `limit` documents per collection; returns how many were relayed."""
        relayed = 0
        gate = asyncio.Semaphore(self.concurrency)
        for col in self.collections:
            read_at = time.monotonic()
            docs = [d async for d in col.find({"relay": True}, {"outbox": 1}).limit(limit)]

            async def relay(doc: dict[str, Any], col: Collection = col, read_at: float = read_at) -> int:
                async with gate:
                    if time.monotonic() - read_at > self.grace_s / 2:
                        return 0  # this read is getting old: the next pass reads again
                    entries = [CountedEntry.from_document(e) for e in doc.get("outbox") or []]
                    await self._relay(col, doc["_id"], entries)
                    return 1

            # documents are independent (each one's entries still go out in order): overlap round trips
            relayed += sum(await asyncio.gather(*(relay(d) for d in docs)))
        return relayed

    async def _relay(self, col: Collection, _id: Any, entries: list[CountedEntry]) -> None:
        if entries:
            await self.progress.apply(entries, self.clock())
            events = [e.event for e in entries if e.event is not None]  # planning's counts have none
            if events:
                await self.publisher.publish(events)
            await col.update_one({"_id": _id}, mongo.pull_relayed(entries))
        await col.update_one({"_id": _id, "outbox.0": {"$exists": False}}, {"$unset": {"relay": ""}})

    async def sweep(self, counted: Sequence[Collection], limit: int = 100) -> int:
        """Forget remembered ids whose entries are gone and that are older than the grace period (`counted`:
        the collections whose outboxes carry counter deltas)."""
        cutoff = self.clock() - timedelta(seconds=self.grace_s)
        forgotten = 0
        for cid, applied in await self.progress.applied(limit):
            old = [a for a in applied if _aware(a["at"]) < cutoff]
            pending: set[str] = set()
            for col in counted:
                pending |= await _still_in_outbox(col, [a["id"] for a in old])
            gone = [a for a in old if a["id"] not in pending]
            if gone:
                await self.progress.forget(cid, gone)
                forgotten += len(gone)
        return forgotten


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


async def _still_in_outbox(col: Collection, entry_ids: list[str]) -> set[str]:
    """Which of these entries are still in their document's outbox (one query for all of them)."""
    if not entry_ids:
        return set()
    # entry ids are `ota:<document id>:<version or what>` (an upgrade, or a plan chunk)
    doc_ids = list({e.removeprefix("ota:").rsplit(":", 1)[0] for e in entry_ids})
    wanted = set(entry_ids)
    cursor = col.find({"_id": {"$in": doc_ids}, "outbox.0": {"$exists": True}}, {"outbox.id": 1})
    return {e["id"] async for d in cursor for e in d.get("outbox") or [] if e.get("id") in wanted}
