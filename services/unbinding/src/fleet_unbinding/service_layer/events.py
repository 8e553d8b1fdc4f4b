"""Domain events -> outbox entries: the envelope, a deterministic id, the topic and key from the registry."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fleet_contracts import topics
from fleet_contracts.envelope import Envelope, service_source, to_json_bytes
from fleet_contracts.outbox import OutboxEntry
from fleet_contracts.unbinding import (
    BatchDeviceRefused,
    BatchDeviceRefusedEvent,
    BatchDeviceUnbound,
    BatchDeviceUnboundEvent,
    UnbindBatchFinished,
    UnbindBatchFinishedEvent,
    UnbindBatchRequested,
    UnbindBatchRequestedEvent,
)

SOURCE = service_source("unbinding")

DomainEvent = UnbindBatchRequested | BatchDeviceUnbound | BatchDeviceRefused | UnbindBatchFinished


def event_id(event: DomainEvent) -> str:
    """One id per fact: a replayed transition produces the same id, so consumers dedupe it."""
    match event:
        case UnbindBatchRequested():
            return f"unbinding:{event.batch_id}:requested"
        case BatchDeviceUnbound() | BatchDeviceRefused():
            return f"unbinding:{event.batch_id}:{event.device_id}:result"
        case UnbindBatchFinished():
            return f"unbinding:{event.batch_id}:finished"


_ENVELOPES: dict[type[Any], type[Envelope[Any]]] = {
    UnbindBatchRequested: UnbindBatchRequestedEvent,
    BatchDeviceUnbound: BatchDeviceUnboundEvent,
    BatchDeviceRefused: BatchDeviceRefusedEvent,
    UnbindBatchFinished: UnbindBatchFinishedEvent,
}


@dataclass(frozen=True, slots=True)
class EventFactory:
    tenant: str
    region: str

    def outbox(self, events: Sequence[DomainEvent], now: datetime) -> list[OutboxEntry]:
        topic = topics.UNBINDING_EVENTS
        entries = []
        for event in events:
            envelope = _ENVELOPES[type(event)].build(
                event,
                source=SOURCE,
                tenant=self.tenant,
                region=self.region,
                event_id=event_id(event),
                time=now,
            )
            body = to_json_bytes(envelope)
            entries.append(OutboxEntry(envelope.id, topic.name, event.batch_id, body))
        return entries
