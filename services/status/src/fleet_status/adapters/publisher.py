"""The outbox relay's publisher: publishes the events a shadow write recorded, to the topics the registry
names."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from fleet_shared.pulsar import PulsarBroker
from fleet_status.domain.events import OutboxEntry

EVENT_ID_PROPERTY = "event-id"


class PulsarEventPublisher:
    """Publishes the stored bodies byte for byte, keyed by device id; the event id rides as a property."""

    def __init__(self, broker: PulsarBroker) -> None:
        self.broker = broker

    async def publish(self, entries: Sequence[OutboxEntry]) -> None:
        if not entries:
            return
        await asyncio.gather(
            *(
                self.broker.publish(e.body, e.topic, key=e.key, headers={EVENT_ID_PROPERTY: e.id})
                for e in entries
            )
        )
