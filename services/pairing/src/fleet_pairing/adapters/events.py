"""From the domain's event payloads to outbox entries: the envelope, its deterministic id, topic and key.

An entry's id is fixed by the session, the version the write produced and the event's place in it, so a
relay after a crash republishes the same ids and consumers de-duplicate them.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fleet_contracts import pairing, topics
from fleet_contracts._base import Payload
from fleet_contracts.envelope import Envelope, service_source, to_json_bytes

SOURCE = service_source("pairing")
_EVENT_NAMESPACE = uuid.UUID("5f0c3a52-56a4-4c1e-9a9e-2f7b1d0c8e11")

_ENVELOPES: dict[type[Payload], type[Envelope[Any]]] = {
    pairing.PairingTokenIssued: pairing.PairingTokenIssuedEvent,
    pairing.PairingTokenConsumed: pairing.PairingTokenConsumedEvent,
    pairing.PairingTokenExpired: pairing.PairingTokenExpiredEvent,
    pairing.DevicePaired: pairing.DevicePairedEvent,
    pairing.PairingFailed: pairing.PairingFailedEvent,
    pairing.PairingSessionEnded: pairing.PairingSessionEndedEvent,
    pairing.PreviousOwnerNotified: pairing.PreviousOwnerNotifiedEvent,
    pairing.UnexpectedProductPaired: pairing.UnexpectedProductPairedEvent,
    pairing.LateActivation: pairing.LateActivationEvent,
}


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """An event waiting to be relayed: its deterministic id, topic, key and the exact body to publish."""

    id: str
    topic: str
    key: str
    body: bytes


def event_id(session_id: str, version: int, index: int) -> str:
    return str(uuid.uuid5(_EVENT_NAMESPACE, f"{session_id}/{version}/{index}"))


@dataclass(frozen=True, slots=True)
class EventEncoder:
    """Wraps payloads in envelopes for one Tuya project (tenant) and region."""

    tenant: str
    region: str

    def entries(
        self, session_id: str, version: int, events: Sequence[Payload], now: datetime
    ) -> list[OutboxEntry]:
        out: list[OutboxEntry] = []
        for index, payload in enumerate(events):
            envelope_class = _ENVELOPES[type(payload)]
            envelope = envelope_class.build(
                payload,
                source=SOURCE,
                tenant=self.tenant,
                region=self.region,
                event_id=event_id(session_id, version, index),
                time=now,
            )
            key = topics.PAIRING_EVENTS.key.of(envelope) or session_id
            out.append(OutboxEntry(envelope.id, topics.PAIRING_EVENTS.name, key, to_json_bytes(envelope)))
        return out
