"""Publishing outbox entries (`fleet_contracts.outbox`): the one publisher every service's relay uses."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from fleet_contracts.outbox import EVENT_ID_PROPERTY, OutboxEntry

from .broker import PulsarBroker


class OutboxPublisher:
    """Publishes stored bodies byte for byte, with the event id as a property.

    Entries of one key go out one after another, in the order given (a document's events keep their order
    on the topic); different keys go out in parallel. Returns once Pulsar has persisted every entry, and
    raises if any failed: the relay then leaves the entries in their document and tries again later.
    """

    def __init__(self, broker: PulsarBroker) -> None:
        self.broker = broker

    async def publish(self, entries: Sequence[OutboxEntry]) -> None:
        by_key: dict[str, list[OutboxEntry]] = {}
        for entry in entries:
            by_key.setdefault(entry.key, []).append(entry)
        await asyncio.gather(*(self._in_order(group) for group in by_key.values()))

    async def _in_order(self, entries: Sequence[OutboxEntry]) -> None:
        for e in entries:
            await self.broker.publish(e.body, e.topic, key=e.key, headers={EVENT_ID_PROPERTY: e.id})
