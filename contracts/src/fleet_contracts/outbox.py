"""Outbox entries: an event exactly as it will be published, stored in the same document write as the state
change that caused it (DESIGN.md, "Delivery and state"), relayed and cleared afterwards.

Every service keeps its outbox entries in this one layout, so the relay, the publisher and the clearing of
relayed entries (which removes them by exact equality) are written once. Pure data: a service's domain may
build entries; only adapters store and publish them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fleet_contracts.envelope import Envelope, to_json_bytes
from fleet_contracts.topics import Topic

# The Pulsar message property that carries the event id, so consumers can de-duplicate without parsing.
EVENT_ID_PROPERTY = "event-id"


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """An event waiting to be relayed: its deterministic id, topic, key and the exact body to publish.

    The id is derived from the state change (document id and version), so a relay repeated after a crash
    publishes the same ids and consumers de-duplicate them.
    """

    id: str
    topic: str
    key: str
    body: bytes

    def to_document(self) -> dict[str, Any]:
        # the one place that lays an entry out: clearing removes stored entries by exact equality
        return {"id": self.id, "topic": self.topic, "key": self.key, "body": self.body}

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> OutboxEntry:
        return cls(doc["id"], doc["topic"], doc["key"], bytes(doc["body"]))


def entries_of(doc: Mapping[str, Any], field: str = "outbox") -> list[OutboxEntry]:
    """The outbox entries a stored document holds (none when the field is absent)."""
    stored: Iterable[Mapping[str, Any]] = doc.get(field) or ()
    return [OutboxEntry.from_document(e) for e in stored]


def entry_for(topic: Topic[Any], envelope: Envelope[Any], *, default_key: str) -> OutboxEntry:
    """The entry that publishes `envelope` on `topic`, keyed as the topic registry says (or `default_key`)."""
    return OutboxEntry(
        envelope.id, topic.name, topic.key.of(envelope) or default_key, to_json_bytes(envelope)
    )
