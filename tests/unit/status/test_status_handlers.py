"""The status subscription and shadow writer, the device topic and the stores in memory at the seam (the
dead-letter topic through TestPulsarBroker)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
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
from fleet_shared.pulsar import PulsarMessage, SendFailedError, TestPulsarBroker
from fleet_status.domain.events import OutboxEntry
from fleet_status.ports import ShadowWrite, StoredShadow
from tests.unit.status.fakes import FakePublisher, FakeShadowStore, device_topic, history_rows, make

pytestmark = pytest.mark.unit

ORIGIN = TuyaOrigin(protocol=4, push_time_ms=1)


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


async def test_reports_are_typed_written_once_per_batch_and_acked_after_the_write() -> None:
    broker, writer, store, publisher, history = make()
    async with device_topic(broker) as br:
        await send(br, status("d1", ("temp", 215, 10)))
        await send(br, status("d1", ("mode", "b", 11)))
        assert br.consumer.acked == []  # nothing acked before it is durable
        await writer.flush_once()
        assert len(br.consumer.acked) == 2

    shadow = store.docs["d1"].shadow
    assert shadow.dps["temp"].value == 21.5
    assert shadow.version == 1
    assert store.writes == 1  # two messages, one write
    [entry] = publisher.published
    event = topics.STATUS_SHADOW_EVENTS.decode(entry.body)
    assert isinstance(event, ShadowChangedEvent)
    assert event.id == "status:d1:shadow:1"
    assert {c.code: c.new.value for c in event.data.changes} == {"temp": 21.5, "mode": "b"}
    assert len(history_rows(store, history)) == 2  # in the shadow's journal, with that one write
    assert history.appends == 0


async def test_late_and_duplicate_reports_change_nothing_and_emit_nothing() -> None:
    broker, writer, store, publisher, _ = make()
    async with device_topic(broker) as br:
        await send(br, status("d1", ("temp", 300, 20)))
        await writer.flush_once()
        await send(br, status("d1", ("temp", 100, 10)))  # late
        await send(br, status("d1", ("temp", 300, 20)))  # duplicate
        await writer.flush_once()
        assert len(br.consumer.acked) == 3

    assert store.docs["d1"].shadow.dps["temp"].value == 30.0
    # the late report's history is kept (its journal is written, the shadow unchanged); a duplicate adds none
    assert store.writes == 2
    assert [(r.device_time_ms, r.value) for r in store.docs["d1"].journal.readings] == [
        (20, 30.0),
        (10, 10.0),
    ]
    assert len(publisher.published) == 1


async def test_presence_events_follow_device_time() -> None:
    broker, writer, _store, publisher, _ = make()
    async with device_topic(broker) as br:
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
    async with device_topic(broker) as br:
        await send(br, status("d1", ("temp", 215, 10)))
        await writer.flush_once()  # written, relay fails: nacked, the event stays in the outbox
        assert store.docs["d1"].outbox
        assert br.consumer.nacked
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

    async with TestPulsarBroker(broker), device_topic(broker) as topic:
        sent = [
            await topic.publish(b'{"type": "device.status.reported.v1"}', key="d1"),
            await topic.publish(b"not json", key="d2"),
        ]
        assert topic.consumer.acked == sent  # each acked once dead-lettered
    assert len(dead) == 2


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
    writer.shadows = store
    async with device_topic(broker) as br:
        await send(br, status("d1", ("temp", 215, 10)))
        await writer.flush_once()  # the outage: nothing acked, nothing nacked, still pending
        consumer_ = br.consumer
        assert (consumer_.acked, consumer_.nacked) == ([], [])
        assert writer.pending_messages == 1
        assert not writer.healthy
        await writer.flush_once()  # the database is back
        assert len(consumer_.acked) == 1
        assert consumer_.nacked == []

    assert writer.healthy
    assert store.docs["d1"].shadow.dps["temp"].value == 21.5
    assert [e.id for e in publisher.published] == ["status:d1:shadow:1"]


class BusOutageOnce(FakePublisher):
    """A publisher whose next relay the broker does not persist (a send failed: a timeout, a restart)."""

    def __init__(self) -> None:
        super().__init__()
        self.outages = 1

    async def publish(self, entries: Sequence[OutboxEntry]) -> None:
        if self.outages and entries:
            self.outages -= 1
            raise SendFailedError("Timeout (injected)")
        await super().publish(entries)


async def test_a_send_the_bus_did_not_persist_is_an_outage_the_batch_is_kept_not_nacked() -> None:
    broker, writer, store, _, _ = make()
    publisher = writer.publisher = BusOutageOnce()
    async with device_topic(broker) as br:
        await send(br, status("d1", ("temp", 215, 10)))
        await writer.flush_once()  # written, its event not relayed: kept in the outbox, message held
        consumer_ = br.consumer
        assert (consumer_.acked, consumer_.nacked) == ([], [])
        assert writer.pending_messages == 1
        assert store.docs["d1"].outbox
        await writer.flush_once()  # the bus is back: the leftover is relayed, the message acked
        assert len(consumer_.acked) == 1
        assert consumer_.nacked == []

    assert [e.id for e in publisher.published] == ["status:d1:shadow:1"]
