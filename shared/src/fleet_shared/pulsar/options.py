"""Plain option objects a user passes to the broker, its subscribers and publishers."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pulsar

_PARTITION_SUFFIX = re.compile(r"-partition-\d+$")


@dataclass(frozen=True, kw_only=True)
class DeadLetter:
    """Dead-letter a message once it has been redelivered `max_redeliveries` times.

    The broker does this itself rather than through pulsar-client's `ConsumerDeadLetterPolicy`, because
    the client-side policy drops the reason: on the failing delivery whose redelivery count has reached
    `max_redeliveries` (or at once on reject), a `MessageDeadLetteredEvent` holding the original message
    is published to `topic` (default `<topic>-<subscription>-DLQ`, Pulsar's own convention) with the error
    also in its properties, then the original is acknowledged; `fleet_contracts.deadletter` documents the
    format. A handler therefore runs at most `max_redeliveries + 1` times. Pulsar counts redeliveries for
    Shared and KeyShared subscriptions only.
    """

    max_redeliveries: int = 3
    topic: str | None = None

    def __post_init__(self) -> None:
        if self.max_redeliveries < 0:
            raise ValueError("max_redeliveries must be >= 0")


@dataclass(frozen=True, kw_only=True)
class ProducerOptions:
    """How the producer of one topic batches, compresses and bounds its sends.

    KeyBased batching is the default because every tuya-fleet event is keyed: a KeyShared subscription
    dispatches a whole batch by its first key, so mixed-key batches (`BatchingType.Default`) would break
    per-key routing; use Default batching only for topics no KeyShared subscription reads.

    `batching_max_publish_delay_ms` is a hard bound with KeyBased batching here, which the client alone
    does not give: it restarts its batch timer on the first message of every *key*, so with more keys
    than messages per delay the timer never fires and batches wait until 1,000 messages or 128 KiB have
    accumulated. The broker flushes each producer on its own timer instead (see producer._BatchFlusher).
    Paced end to end (bench/bus.py, 1,000 keys, 2,000 msg/s, publisher and consumer in one process,
    medians of 3-4 runs on a 2-core machine at load 2-7, so p99 is noisy):

        raw client, KeyBased 10 ms        p50 ~350 ms, p99 ~600 ms   (flushes only when full)
        broker,     KeyBased 10 ms        p50 ~16 ms,  p99 ~25-65 ms (this default)
        broker,     Default 10 ms         p50 ~17 ms,  p99 ~30-80 ms
        broker,     batching=False        p50 ~9 ms,   p99 ~15-35 ms

    so unbatched sends have the lowest latency at low rates, while batching pays off at high rates with
    few keys per delay window (at 1,000 keys, KeyBased batches hold ~1 message each and a flood publishes
    at the same rate as unbatched: ~7.5k msg/s). Lower the delay for latency-critical topics, or set
    `batching=False` (per publisher: `broker.publisher(topic, producer_options=...)`).

    `max_pending_messages` is also the number of sends the broker lets be in flight per topic; the
    rest wait on a semaphore instead of failing with ProducerQueueIsFull or blocking the event loop.
    """

    batching: bool = True
    batching_type: Any = pulsar.BatchingType.KeyBased
    batching_max_messages: int = 1000
    batching_max_bytes: int = 128 * 1024
    batching_max_publish_delay_ms: int = 10
    compression: Any = pulsar.CompressionType.NONE
    send_timeout_ms: int = 30_000
    max_pending_messages: int = 1000
    producer_name: str | None = None

    def as_kwargs(self) -> dict[str, Any]:
        return {
            "batching_enabled": self.batching,
            "batching_type": self.batching_type,
            "batching_max_messages": self.batching_max_messages,
            "batching_max_allowed_size_in_bytes": self.batching_max_bytes,
            "batching_max_publish_delay_ms": self.batching_max_publish_delay_ms,
            "compression_type": self.compression,
            "send_timeout_millis": self.send_timeout_ms,
            "max_pending_messages": self.max_pending_messages,
            "producer_name": self.producer_name,
            # Never block the event-loop thread inside send_async: the semaphore bounds sends instead.
            "block_if_queue_full": False,
        }


def normalize_topic(topic: str) -> str:
    """The fully qualified name Pulsar gives `topic` (`x` is `persistent://public/default/x`)."""
    if "://" in topic:
        return topic
    parts = topic.split("/")
    if len(parts) == 1:
        return f"persistent://public/default/{topic}"
    return f"persistent://{topic}"


def base_topic(topic: str) -> str:
    """The partitioned topic a partition belongs to (`t-partition-3` is `t`)."""
    return _PARTITION_SUFFIX.sub("", normalize_topic(topic))
