"""Publishing outbox entries (`fleet_contracts.outbox`): the one publisher every service's relay uses, and the
wrapper that turns the published events into a service's domain metrics."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from prometheus_client import CollectorRegistry, Counter

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


class EntryPublisher(Protocol):
    async def publish(self, entries: Sequence[OutboxEntry]) -> None: ...


#: the label values one event adds 1 to, or None when the metric does not count that event
LabelsOf = Callable[[Mapping[str, Any]], Sequence[str] | None]


@dataclass(frozen=True)
class EventMetric:
    """A domain counter fed by the events a service publishes: `labels_of` reads one envelope (`type`,
    `data`) and names the label values it counts under."""

    counter: Counter
    labels_of: LabelsOf


_counters: weakref.WeakKeyDictionary[CollectorRegistry, dict[str, Counter]] = weakref.WeakKeyDictionary()


def event_counter(
    registry: CollectorRegistry, name: str, documentation: str, labels: Sequence[str]
) -> Counter:
    """The counter `name` of `registry`, created once: a service bootstrapped twice in one process (tests)
    keeps counting in the same one instead of failing on a duplicate registration."""
    known = _counters.setdefault(registry, {})
    if name not in known:
        known[name] = Counter(name, documentation, labels, registry=registry)
    return known[name]


class CountingPublisher:
    """Publishes through `inner`, then counts each published event in the domain metrics.

    Counting follows the outbox: an event is counted when the bus has persisted it, so the counters
    describe facts that are durable and visible to consumers. A relay repeated after a crash publishes the
    same events again and counts them again (rare; the consumers de-duplicate by event id, a rate does not).
    """

    def __init__(self, inner: EntryPublisher, metrics: Sequence[EventMetric]) -> None:
        self.inner = inner
        self.metrics = metrics

    async def publish(self, entries: Sequence[OutboxEntry]) -> None:
        await self.inner.publish(entries)
        for entry in entries:
            envelope = orjson.loads(entry.body)
            for metric in self.metrics:
                values = metric.labels_of(envelope)
                if values is not None:
                    metric.counter.labels(*values).inc()
