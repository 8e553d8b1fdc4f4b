"""The outbox relay: publishes the events batch and device writes recorded, inserts the append-only records
of final device results, then removes exactly the relayed entries.

Order per batch (the Pulsar key): `requested` before device results before `finished`: within one pass the
batches' other events go first, then the devices', then the batches' `finished`. A crash anywhere repeats
the pass: events keep their deterministic ids (consumers dedupe) and a record already inserted stays as is.
Device outboxes are emptied in one round trip per pass (see `adapters.mongo._clear_outboxes`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from fleet_contracts.outbox import OutboxEntry
from fleet_unbinding.adapters.mongo import MongoBatchStore, MongoUnbindStore


class EventPublisher(Protocol):
    async def publish(self, entries: Sequence[OutboxEntry]) -> None:
        """Publish every entry and return once the bus has persisted them all (raise if any failed).

        `fleet_shared.pulsar.OutboxPublisher` in production; tests pass their own."""


def _is_finish(entry: OutboxEntry) -> bool:
    return entry.id.endswith(":finished")


class OutboxRelay:
    def __init__(
        self, batches: MongoBatchStore, unbinds: MongoUnbindStore, publisher: EventPublisher
    ) -> None:
        self.batches = batches
        self.unbinds = unbinds
        self.publisher = publisher

    async def relay_once(self, limit: int = 500) -> int:
        """One pass over every document with unrelayed events; how many events were published."""
        batch_entries = await self.batches.with_outbox(limit)
        device_entries = await self.unbinds.with_outbox(limit)
        first = [(b, [e for e in es if not _is_finish(e)]) for b, es in batch_entries]
        last = [(b, [e for e in es if _is_finish(e)]) for b, es in batch_entries]
        published = 0
        for batch_id, entries in first:
            if entries:
                await self.publisher.publish(entries)
                await self.batches.clear_outbox(batch_id, entries)
                published += len(entries)
        if device_entries:
            await self.publisher.publish([e for _, es in device_entries for e in es])
            await self.unbinds.add_records([u for u, _ in device_entries])
            await self.unbinds.clear_outboxes(device_entries)
            published += sum(len(entries) for _, entries in device_entries)
        if len(device_entries) >= limit:
            return published  # device results may remain: `finished` waits for the next pass
        for batch_id, entries in last:
            if entries:
                await self.publisher.publish(entries)
                await self.batches.clear_outbox(batch_id, entries)
                published += len(entries)
        return published
