"""What the service layer needs from the world: Tuya's topic, the internal bus, the dedup store, metrics and
traces. Adapters implement these; unit tests use fakes of them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client import Counter, Gauge, Histogram

from fleet_ingest.domain.model import RejectClass, TuyaDelivery
from fleet_shared.pulsar import Confirmations, Send


@dataclass(frozen=True, slots=True)
class Received:
    """A delivery and the handle of the message it came from (what acknowledging it takes)."""

    delivery: TuyaDelivery
    handle: Any


class TuyaSource(Protocol):
    """Tuya's push topic: one long-lived receive at a time; each delivery carries its position on its
    partition (`TuyaDelivery.position`), so a handover's out-of-order delivery shows."""

    async def subscribe(self) -> None: ...
    async def receive(self) -> Received: ...
    def receive_ready(self, limit: int) -> list[Received]:
        """Up to `limit` messages that have already arrived, without waiting."""
        ...

    def acknowledge(self, received: Sequence[Received]) -> None:
        """Each message in `received` is done with: ack each one individually. Never cumulatively: on a
        handover the broker may deliver a partition's later messages before earlier ones (`handover`)."""
        ...

    async def close_consumer(self) -> None:
        """Close the consumer: every unacked message is redelivered, in order, to the next one."""
        ...

    async def close(self) -> None: ...
    @property
    def topic(self) -> str: ...
    @property
    def subscription(self) -> str: ...


class EventSink(Protocol):
    """The internal bus: starts sends in call order; each ticket is done once the broker persisted it."""

    @property
    def confirmations(self) -> Confirmations: ...
    def send_event(self, body: bytes, key: str | None, properties: dict[str, str]) -> Send: ...
    def send_dead_letter(self, body: bytes, key: str | None, properties: dict[str, str]) -> Send: ...
    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> bool: ...


class DedupStore(Protocol):
    """The durable half of de-duplication: dedup keys of messages already published."""

    async def setup(self) -> None: ...
    async def seen(self, keys: Sequence[str]) -> set[str]: ...
    async def record(self, keys: Sequence[str]) -> None: ...
    async def expire(self) -> None: ...
    async def ping(self) -> bool: ...


class HandoverProbe(Protocol):
    """Asks the broker whether a partition's hold is needed (`service_layer.handover`)."""

    async def settled(self, partition: str, first: tuple[int, int, int]) -> bool:
        """Nothing before position `first` of `partition` is unacknowledged on the subscription (False when
        unsure)."""
        ...


class Metrics(Protocol):
    """ingest's Prometheus metrics (children pre-resolved where the hot path needs them)."""

    received: Counter
    in_flight: Gauge
    lag: Histogram
    lag_last: Gauge
    duplicates: Counter
    publish_latency: Histogram
    sequencing_delay: Histogram
    recoveries: Counter
    store_errors: Counter
    handover_holds: Counter
    handover_dropped: Counter
    handover_holds_ended: Counter
    rejected_by_reason: dict[RejectClass, Counter]

    def count_decoded(self, kind: str, amount: int) -> None: ...
    def count_published(self, event_type: str, amount: int) -> None: ...


class MessageTrace(Protocol):
    """The trace of one or more messages processed together; ends once every one of them is settled."""

    @property
    def carrier(self) -> dict[str, str]:
        """W3C trace context properties for the events published in this trace."""
        ...

    def settle(self, outcome: str | None = None) -> None: ...


class Tracing(Protocol):
    def for_batch(self, batch: Sequence[Received]) -> MessageTrace | None:
        """The trace shared by the messages of `batch` that bring no trace context of their own."""
        ...

    def continued(self, properties: Mapping[str, str]) -> MessageTrace | None:
        """A trace of its own for a message that brings trace context, else None."""
        ...
