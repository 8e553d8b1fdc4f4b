"""ingest's Prometheus metrics (served on /metrics by the operations router)."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from fleet_ingest.domain.model import RejectClass

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_LAG_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    1800.0,
    7200.0,
)


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        r = registry
        self.received = Counter(
            "fleet_ingest_messages_received", "Tuya messages received from the push topic.", registry=r
        )
        self.decoded = Counter(
            "fleet_ingest_messages_decoded",
            "Tuya messages decrypted and parsed, by Tuya message kind.",
            ["kind"],
            registry=r,
        )
        self.rejected = Counter(
            "fleet_ingest_messages_rejected",
            "Tuya messages dead-lettered, by reason class.",
            ["reason"],
            registry=r,
        )
        self.duplicates = Counter(
            "fleet_ingest_duplicates_dropped",
            "Duplicate Tuya messages dropped, by where they were recognised (in_flight, window, store).",
            ["source"],
            registry=r,
        )
        self.published = Counter(
            "fleet_ingest_events_published",
            "Device events confirmed by the internal bus, by event type.",
            ["type"],
            registry=r,
        )
        self.publish_latency = Histogram(
            "fleet_ingest_publish_latency_seconds",
            "From handing an event to the producer to the bus's confirmation.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.sequencing_delay = Histogram(
            "fleet_ingest_sequencing_delay_seconds",
            "From a batch's receipt to its sends starting: the dedup-store lookup and the batches before it.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.lag = Histogram(
            "fleet_ingest_consumer_lag_seconds",
            "From the Tuya message's publish time to its receipt by ingest.",
            buckets=_LAG_BUCKETS,
            registry=r,
        )
        self.lag_last = Gauge(
            "fleet_ingest_consumer_lag_last_seconds",
            "Consumer lag of the most recently received Tuya message.",
            registry=r,
        )
        self.in_flight = Gauge(
            "fleet_ingest_in_flight_messages",
            "Tuya messages received and not yet acknowledged.",
            registry=r,
        )
        self.recoveries = Counter(
            "fleet_ingest_recoveries",
            "Resubscriptions after a transient failure (broker or database); nothing is acked meanwhile.",
            ["cause"],
            registry=r,
        )
        self.store_errors = Counter(
            "fleet_ingest_dedup_store_errors",
            "Failed writes to the dedup store (retried; consumers still dedupe by event id).",
            registry=r,
        )
        self.handover_holds = Counter(
            "fleet_ingest_handover_holds",
            "Partitions held back because they were new to this consumer or skipped ahead (a handover).",
            registry=r,
        )
        self.handover_dropped = Counter(
            "fleet_ingest_handover_dropped",
            "Messages a handover delivered before earlier ones, dropped unacked for the broker's rewind.",
            registry=r,
        )
        self.handover_holds_ended = Counter(
            "fleet_ingest_handover_holds_ended",
            "Holds ended early: the broker showed nothing before the partition's first message was unacked.",
            registry=r,
        )
        # Pre-resolved children for the hot path.
        self.rejected_by_reason = {reason: self.rejected.labels(reason.value) for reason in RejectClass}
        for source in ("in_flight", "window", "store"):
            self.duplicates.labels(source)
        self._decoded_by_kind: dict[str, Counter] = {}
        self._published_by_type: dict[str, Counter] = {}

    def count_decoded(self, kind: str, amount: int) -> None:
        _count(self._decoded_by_kind, self.decoded, kind, amount)

    def count_published(self, event_type: str, amount: int) -> None:
        _count(self._published_by_type, self.published, event_type, amount)


def _count(children: dict[str, Counter], counter: Counter, label: str, amount: int) -> None:
    """`counter.labels(label).inc(amount)` with the child looked up once per label, not per batch."""
    child = children.get(label)
    if child is None:
        child = children[label] = counter.labels(label)
    child.inc(amount)
