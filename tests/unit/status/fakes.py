"""In-memory stores, schema source and publisher at status's adapter seam, and a writer wired to them."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from fleet_contracts import topics
from fleet_shared.pulsar import DeviceSubscription, PulsarBroker
from fleet_shared.pulsar.device_batches import DeviceEventBatches
from fleet_shared.pulsar.testing import FakeMessage as FakePulsarMessage
from fleet_shared.pulsar.testing import InMemoryConsumer
from fleet_status.adapters.tuya import SchemaCache
from fleet_status.domain.dp_schema import DpDefinition, DpSchema, DpType
from fleet_status.domain.events import OutboxEntry
from fleet_status.domain.shadow import AcceptedReading, PresenceReport
from fleet_status.entrypoints import consumer
from fleet_status.ports import ShadowWrite, StoredShadow
from fleet_status.service_layer.writer import ShadowWriter

SCHEMA = DpSchema(
    "p1",
    {
        "temp": DpDefinition("temp", 2, DpType.INTEGER, scale=1),
        "mode": DpDefinition("mode", 3, DpType.ENUM, range=("a", "b")),
    },
)


class FakeShadowStore:
    def __init__(self) -> None:
        self.docs: dict[str, StoredShadow] = {}
        self.writes = 0

    async def load(self, device_ids: Sequence[str]) -> dict[str, StoredShadow]:
        return {d: self.docs[d] for d in device_ids if d in self.docs}

    async def write(self, writes: Sequence[ShadowWrite], now: datetime) -> set[str]:
        lost = set()
        for w in writes:
            current = self.docs.get(w.shadow.device_id)
            if (current.shadow.version if current else 0) != w.expected_version:
                lost.add(w.shadow.device_id)
                continue
            self.docs[w.shadow.device_id] = StoredShadow(w.shadow.copy(), list(w.outbox), w.journal)
            self.writes += 1
        return lost

    async def clear_outbox(self, relayed: Mapping[str, Sequence[OutboxEntry]]) -> None:
        for d, entries in relayed.items():
            self.docs[d].outbox = [e for e in self.docs[d].outbox if e not in entries]

    async def with_outbox(self, limit: int) -> list[StoredShadow]:
        return [s for s in self.docs.values() if s.outbox][:limit]


class FakeHistoryStore:
    """The buckets: a report once (a replayed one adds nothing, as the real append skips what it holds)."""

    def __init__(self) -> None:
        self.rows: dict[str, Any] = {}
        self.appends = 0  # calls of `add` (journal moves)

    async def add(
        self,
        readings: Mapping[str, Sequence[AcceptedReading]],
        presence: Mapping[str, Sequence[PresenceReport]],
        now: datetime,
    ) -> None:
        self.appends += 1
        for d, rs in readings.items():
            for r in rs:
                self.rows.setdefault(f"{d}|{r.code}|{r.device_time_ms}", r)
        for d, ps in presence.items():
            for p in ps:
                self.rows.setdefault(f"{d}|{p.device_time_ms}|{int(p.online)}", p)


def history_rows(store: FakeShadowStore, history: FakeHistoryStore) -> dict[str, Any]:
    """Every report's history as a query sees it: the journals and the buckets, a row in both once."""
    rows = dict(history.rows)
    for d, stored in store.docs.items():
        for r in stored.journal.readings:
            rows.setdefault(f"{d}|{r.code}|{r.device_time_ms}", r)
        for p in stored.journal.presence:
            rows.setdefault(f"{d}|{p.device_time_ms}|{int(p.online)}", p)
    return rows


class FakeSchemaApi:
    calls = 0

    async def get_specifications(self, device_id: str, *, version: str = "v1.0") -> Any:
        raise AssertionError("the schema comes from the store in these tests")


class FakeSchemaStore:
    async def get(self, product_id: str) -> tuple[DpSchema, datetime] | None:
        return (SCHEMA, datetime.now(UTC)) if product_id == "p1" else None

    async def put(self, schema: DpSchema, fetched_at: datetime) -> None:
        pass


class FakePublisher:
    def __init__(self) -> None:
        self.published: list[OutboxEntry] = []
        self.fail_next = 0

    async def publish(self, entries: Sequence[OutboxEntry]) -> None:
        if self.fail_next and entries:
            self.fail_next -= 1
            raise ConnectionError("publish failed (injected)")
        self.published.extend(entries)


def make() -> tuple[PulsarBroker, ShadowWriter, FakeShadowStore, FakePublisher, FakeHistoryStore]:
    broker = PulsarBroker()
    store, history, publisher = FakeShadowStore(), FakeHistoryStore(), FakePublisher()
    writer = ShadowWriter(
        store,
        history,
        SchemaCache(None, FakeSchemaStore()),
        publisher,
        tenant="t",
        region="eu",
        max_delay_s=0,
    )
    _device_events[id(broker)] = consumer.register(
        broker, writer, DeviceSubscription("status", max_redeliveries=2, receiver_queue_size=10), tenant="t"
    )
    return broker, writer, store, publisher, history


_device_events: dict[int, DeviceEventBatches] = {}


class DeviceTopic:
    """The device topic as status's subscription receives it, in memory: `publish` hands the message to
    the subscription as a batch of one (as `TestPulsarBroker.publish` did), `consumer` records how each
    ended (acked, nacked)."""

    def __init__(self, batches: DeviceEventBatches, consumer: InMemoryConsumer) -> None:
        self.batches = batches
        self.consumer = consumer

    async def publish(
        self,
        body: bytes,
        topic: str = topics.DEVICE_EVENTS.name,
        *,
        key: str = "",
        headers: dict[str, str] | None = None,
        redeliveries: int = 0,
    ) -> FakePulsarMessage:
        raw = FakePulsarMessage(
            body, topic=topic, properties=headers or {}, partition_key=key, redelivery_count=redeliveries
        )
        await self.batches.process([raw])
        return raw


@contextlib.asynccontextmanager
async def device_topic(broker: PulsarBroker) -> AsyncIterator[DeviceTopic]:
    """status's device subscription (made by `make`) receiving from an in-memory consumer."""
    batches = _device_events[id(broker)]
    in_memory = InMemoryConsumer()
    await batches.start(in_memory)
    try:
        yield DeviceTopic(batches, in_memory)
    finally:
        await batches.close()


class FakeMessage:
    """A consumed message as the writer sees it: acked once its report is durable, nacked on failure."""

    def __init__(self) -> None:
        self.acked = self.nacked = False

    async def ack(self) -> None:
        self.acked = True

    async def nack(self) -> None:
        self.nacked = True
