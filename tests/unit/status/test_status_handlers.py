"""The status subscriber and shadow writer through TestPulsarBroker, with in-memory stores at the seam."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

import pytest
from faststream import Context
from pymongo.errors import AutoReconnect

from fleet_contracts import topics
from fleet_contracts.device import (
    DeviceOffline,
    DeviceOfflineEvent,
    DeviceOnline,
    DeviceOnlineEvent,
    DeviceStatusReported,
    DeviceStatusReportedEvent,
    DpReport,
    TuyaOrigin,
)
from fleet_contracts.status import PresenceChangedEvent, ShadowChangedEvent
from fleet_shared.pulsar import PulsarBroker, PulsarMessage, TestPulsarBroker
from fleet_status.adapters.mongo import OutboxEntry, ShadowWrite, StoredShadow
from fleet_status.adapters.tuya import SchemaCache
from fleet_status.domain.dp_schema import DpDefinition, DpSchema, DpType
from fleet_status.domain.shadow import AcceptedReading, PresenceReport
from fleet_status.entrypoints import consumer
from fleet_status.writer import ShadowWriter

pytestmark = pytest.mark.unit

ORIGIN = TuyaOrigin(protocol=4, push_time_ms=1)
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
            self.docs[w.shadow.device_id] = StoredShadow(w.shadow.copy(), list(w.outbox))
            self.writes += 1
        return lost

    async def clear_outbox(self, relayed: Mapping[str, Sequence[OutboxEntry]]) -> None:
        for d, entries in relayed.items():
            self.docs[d].outbox = [e for e in self.docs[d].outbox if e not in entries]

    async def with_outbox(self, limit: int) -> list[StoredShadow]:
        return [s for s in self.docs.values() if s.outbox][:limit]


class FakeHistoryStore:
    def __init__(self) -> None:
        self.rows: dict[str, Any] = {}

    async def add(
        self,
        readings: Mapping[str, Sequence[AcceptedReading]],
        presence: Mapping[str, Sequence[PresenceReport]],
        now: datetime,
    ) -> None:
        for d, rs in readings.items():
            for r in rs:
                self.rows.setdefault(f"{d}|{r.code}|{r.device_time_ms}", r)


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
        store,  # type: ignore[arg-type]
        history,  # type: ignore[arg-type]
        SchemaCache(None, FakeSchemaStore()),  # type: ignore[arg-type]
        publisher,
        tenant="t",
        region="eu",
        max_delay_s=0,
    )
    consumer.register(broker, writer, subscription="status", max_redeliveries=2, receiver_queue_size=10)
    return broker, writer, store, publisher, history


def status(device: str, *dps: tuple[str, Any, int], event_id: str = "") -> DeviceStatusReportedEvent:
    return DeviceStatusReportedEvent.build(
        DeviceStatusReported(
            device_id=device,
            product_id="p1",
            origin=ORIGIN,
            dps=[DpReport(code=c, value=v, device_time_ms=t) for c, v, t in dps],
        ),
        source="/fleet/ingest",
        tenant="t",
        region="eu",
        event_id=event_id or None,
    )


async def send(br: Any, event: Any) -> None:
    await br.publish(topics.DEVICE_EVENTS.encode(event), topics.DEVICE_EVENTS.name, key=event.data.device_id)


def subscriber_consumer(broker: PulsarBroker) -> Any:
    [sub] = [s for s in broker.subscribers if getattr(s, "subscription", None) == "status"]
    return sub._consumer  # type: ignore[attr-defined]


async def test_reports_are_typed_written_once_per_batch_and_acked_after_the_write() -> None:
    broker, writer, store, publisher, history = make()
    async with TestPulsarBroker(broker) as br:
        await send(br, status("d1", ("temp", 215, 10)))
        await send(br, status("d1", ("mode", "b", 11)))
        assert subscriber_consumer(broker).acked == []  # nothing acked before it is durable
        await writer.flush_once()
        assert len(subscriber_consumer(broker).acked) == 2

    shadow = store.docs["d1"].shadow
    assert shadow.dps["temp"].value == 21.5
    assert shadow.version == 1
    assert store.writes == 1  # two messages, one write
    [entry] = publisher.published
    event = topics.STATUS_SHADOW_EVENTS.decode(entry.body)
    assert isinstance(event, ShadowChangedEvent)
    assert event.id == "status:d1:shadow:1"
    assert {c.code: c.new.value for c in event.data.changes} == {"temp": 21.5, "mode": "b"}
    assert len(history.rows) == 2


async def test_late_and_duplicate_reports_change_nothing_and_emit_nothing() -> None:
    broker, writer, store, publisher, _ = make()
    async with TestPulsarBroker(broker) as br:
        await send(br, status("d1", ("temp", 300, 20)))
        await writer.flush_once()
        await send(br, status("d1", ("temp", 100, 10)))  # late
        await send(br, status("d1", ("temp", 300, 20)))  # duplicate
        await writer.flush_once()
        assert len(subscriber_consumer(broker).acked) == 3

    assert store.docs["d1"].shadow.dps["temp"].value == 30.0
    assert store.writes == 1
    assert len(publisher.published) == 1


async def test_presence_events_follow_device_time() -> None:
    broker, writer, _store, publisher, _ = make()
    async with TestPulsarBroker(broker) as br:
        off = DeviceOfflineEvent.build(
            DeviceOffline(device_id="d1", origin=ORIGIN, device_time_ms=50),
            source="/x",
            tenant="t",
            region="eu",
        )
        on = DeviceOnlineEvent.build(
            DeviceOnline(device_id="d1", origin=ORIGIN, device_time_ms=40),
            source="/x",
            tenant="t",
            region="eu",
        )
        await send(br, off)
        await send(br, on)  # older: the device is offline
        await writer.flush_once()

    [entry] = publisher.published
    event = topics.STATUS_PRESENCE_EVENTS.decode(entry.body)
    assert isinstance(event, PresenceChangedEvent)
    assert event.data.online is False
    assert event.data.changed_at_ms == 50


async def test_a_failed_relay_nacks_and_the_outbox_is_relayed_on_the_retry_without_duplicate_ids() -> None:
    broker, writer, store, publisher, _ = make()
    publisher.fail_next = 1
    async with TestPulsarBroker(broker, redelivery_limit=0) as br:
        await send(br, status("d1", ("temp", 215, 10)))
        await writer.flush_once()  # written, relay fails: nacked, the event stays in the outbox
        assert store.docs["d1"].outbox
        assert subscriber_consumer(broker).nacked
        # the redelivery (simulated: the same event again) merges to no change; the leftover is relayed
        await send(br, status("d1", ("temp", 215, 10)))
        await writer.flush_once()

    ids = [e.id for e in publisher.published]
    assert ids == ["status:d1:shadow:1"]
    assert store.docs["d1"].shadow.version == 1


async def test_undecodable_events_are_dead_lettered() -> None:
    broker, _writer, _store, _publisher, _ = make()
    dead: list[bytes] = []

    @broker.subscriber(topics.STATUS_DEAD_LETTER.name, subscription="test")
    async def on_dead(message: Annotated[PulsarMessage, Context("message")]) -> None:
        dead.append(message.body)

    async with TestPulsarBroker(broker) as br:
        await br.publish(b'{"type": "device.status.reported.v1"}', topics.DEVICE_EVENTS.name, key="d1")
    assert len(dead) == 1


async def test_recover_relays_what_a_crashed_process_left_in_outboxes() -> None:
    _broker, writer, store, publisher, _ = make()
    from fleet_status.domain.shadow import Shadow

    store.docs["d9"] = StoredShadow(
        Shadow("d9", version=3), [OutboxEntry("status:d9:shadow:3", "t", "d9", b"{}")]
    )
    assert await writer.recover() == 1
    assert [e.id for e in publisher.published] == ["status:d9:shadow:3"]
    assert store.docs["d9"].outbox == []


class OutageOnce(FakeShadowStore):
    """A store whose next write fails the way a restarting database does."""

    def __init__(self) -> None:
        super().__init__()
        self.outages = 1

    async def write(self, writes: Sequence[ShadowWrite], now: datetime) -> set[str]:
        if self.outages:
            self.outages -= 1
            raise AutoReconnect("connection refused (injected restart)")
        return await super().write(writes, now)


async def test_a_database_outage_keeps_the_batch_and_retries_it_without_nacking() -> None:
    broker, writer, _, publisher, _ = make()
    store = OutageOnce()
    writer.shadows = store  # type: ignore[assignment]
    async with TestPulsarBroker(broker, redelivery_limit=0) as br:
        await send(br, status("d1", ("temp", 215, 10)))
        await writer.flush_once()  # the outage: nothing acked, nothing nacked, still pending
        consumer_ = subscriber_consumer(broker)
        assert (consumer_.acked, consumer_.nacked) == ([], [])
        assert writer.pending_messages == 1
        assert not writer.healthy
        await writer.flush_once()  # the database is back
        assert len(consumer_.acked) == 1
        assert consumer_.nacked == []

    assert writer.healthy
    assert store.docs["d1"].shadow.dps["temp"].value == 21.5
    assert [e.id for e in publisher.published] == ["status:d1:shadow:1"]
