"""The bus's RED metrics, from the client's side: every subscriber and every send of a `PulsarBroker`.

Per subscription (labels `topic`, `subscription`; `topic` is what the subscriber was given, not the partition
a message came from, so a partitioned topic is one series):

- `fleet_bus_messages_processed_total`: deliveries a handler was called for, whatever came of them;
- `fleet_bus_messages_failed_total{outcome}`: deliveries that did not succeed, by how they were settled:
  `nack` (redelivered later), `dead_letter` (redeliveries used up: moved to the dead-letter topic), `reject`
  (refused as malformed: dead-lettered at once, or dropped without a dead-letter topic) and `ack` (the
  handler failed but the ack policy acks anyway: dropped);
- `fleet_bus_handler_seconds`: per delivery, from the subscriber taking it to its middlewares' exit: the
  handler and the settlement (under `AckPolicy.MANUAL` the handler settles later, as status does once its
  batch is written: then the handler's own time).

Per topic sent to (label `topic`): `fleet_bus_messages_sent_total`, `fleet_bus_send_failures_total` and
`fleet_bus_send_seconds` (until Pulsar has persisted the message).

Backlog and redeliveries are Pulsar's own (`pulsar_subscription_back_log`,
`pulsar_subscription_msg_rate_redeliver`, scraped from the broker): not counted again here.

The label children are resolved once per subscriber and per topic producer, never per message: a message
costs a counter increment and a histogram observation. The metrics are created once per registry, so
several brokers in one process (tests, the simulator beside a service) share them.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

from .rpc import REPLY_TOPIC_PREFIX

#: how a failed delivery was settled (the `outcome` label of fleet_bus_messages_failed_total)
OUTCOMES = ("nack", "dead_letter", "reject", "ack")

# a handler of the bus takes ~50 µs alone; one with a database write milliseconds; a stuck one seconds
HANDLER_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# a send waits for its batch (up to the producer's 10 ms delay) and the broker's persistence
SEND_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class BusMetrics:
    """The bus's metrics in one registry (`bus_metrics(registry)` makes them once)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        subscription = ("topic", "subscription")
        self.processed = Counter(
            "fleet_bus_messages_processed",
            "Deliveries a subscriber's handler was called for, whatever came of them",
            subscription,
            registry=registry,
        )
        self.failed = Counter(
            "fleet_bus_messages_failed",
            "Deliveries that failed, by how they were settled (nack, dead_letter, reject, ack)",
            (*subscription, "outcome"),
            registry=registry,
        )
        self.handler_seconds = Histogram(
            "fleet_bus_handler_seconds",
            "Time a delivery took: its handler and, unless the handler settles it later itself, its ack",
            subscription,
            buckets=HANDLER_BUCKETS,
            registry=registry,
        )
        self.sent = Counter(
            "fleet_bus_messages_sent", "Messages Pulsar persisted, per topic", ("topic",), registry=registry
        )
        self.send_failures = Counter(
            "fleet_bus_send_failures", "Sends that failed, per topic", ("topic",), registry=registry
        )
        self.send_seconds = Histogram(
            "fleet_bus_send_seconds",
            "Time from a send until Pulsar persisted the message, per topic",
            ("topic",),
            buckets=SEND_BUCKETS,
            registry=registry,
        )

    def subscription(self, topic: str, subscription: str) -> SubscriptionMetrics:
        """The children of one subscriber, every outcome's included (so each series exists from the start)."""
        return SubscriptionMetrics(
            processed=self.processed.labels(topic, subscription),
            seconds=self.handler_seconds.labels(topic, subscription),
            failed={o: self.failed.labels(topic, subscription, o) for o in OUTCOMES},
        )

    def topic(self, topic: str) -> TopicMetrics:
        """The children of one topic sent to; every request's own reply topic counts as one, `(replies)`
        (a label per requesting process would grow with every restart)."""
        if topic.startswith(REPLY_TOPIC_PREFIX):
            topic = "(replies)"
        return TopicMetrics(
            sent=self.sent.labels(topic),
            failures=self.send_failures.labels(topic),
            seconds=self.send_seconds.labels(topic),
        )


@dataclass(frozen=True, slots=True)
class SubscriptionMetrics:
    processed: Counter
    seconds: Histogram
    failed: dict[str, Counter]


@dataclass(frozen=True, slots=True)
class TopicMetrics:
    sent: Counter
    failures: Counter
    seconds: Histogram


_by_registry: weakref.WeakKeyDictionary[CollectorRegistry, BusMetrics] = weakref.WeakKeyDictionary()


def bus_metrics(registry: CollectorRegistry = REGISTRY) -> BusMetrics:
    """The bus's metrics of `registry`, created on first use."""
    if (metrics := _by_registry.get(registry)) is None:
        metrics = _by_registry[registry] = BusMetrics(registry)
    return metrics
