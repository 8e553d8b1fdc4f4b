"""The outbox relay: publishes the events a session write recorded, then clears exactly those entries.

Right after a write, `relay` publishes the document's whole outbox in order (leftovers of an earlier failed
relay first, then the write's own events); whatever it could not publish (broker down, crash) stays in the
document for the next write or `sweep`, with the same ids (consumers de-duplicate on them).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from fleet_contracts.outbox import OutboxEntry
from fleet_pairing.adapters.mongo import SessionStore

log = logging.getLogger(__name__)


class EventPublisher(Protocol):
    async def publish(self, entries: Sequence[OutboxEntry]) -> None:
        """Publish every entry and return once Pulsar has persisted them all (raise if any failed).

        `fleet_shared.pulsar.OutboxPublisher` in production; tests pass their own."""


class OutboxRelay:
    def __init__(self, store: SessionStore, publisher: EventPublisher) -> None:
        self.store = store
        self.publisher = publisher

    async def relay(self, session_id: str, entries: Sequence[OutboxEntry]) -> None:
        """Publish and clear; a failure is logged and left to the sweep (the write itself stands)."""
        try:
            await self.publisher.publish(entries)
        except Exception as e:  # any publish failure: the events are durable in the outbox, the sweep retries
            log.warning(
                "outbox relay failed; left for the sweep", extra={"session_id": session_id, "error": repr(e)}
            )
            return
        await self.store.clear_outbox(session_id, entries)

    async def sweep(self, limit: int = 100) -> int:
        """Publish what earlier relays left behind; returns how many entries were relayed."""
        relayed = 0
        for session_id, entries in await self.store.with_outbox(limit):
            await self.publisher.publish(entries)
            await self.store.clear_outbox(session_id, entries)
            relayed += len(entries)
        return relayed
