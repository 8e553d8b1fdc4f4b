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
    `max_redeliveries`, the message is published to `topic` (default `<topic>-<subscription>-DLQ`, Pulsar's
    own convention) with the error in its properties, then acknowledged. A handler therefore runs at most
    `max_redeliveries + 1` times. Pulsar counts redeliveries for Shared and KeyShared subscriptions only.
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
    dispatches a whole batch by its first key, so mixed-key batches would break per-key routing.
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
