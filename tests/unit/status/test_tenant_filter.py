"""status keeps its own Tuya project's devices: another project's events on the shared device topic are acked
at once and change nothing (no shadow, no DP schema asked for, no event); its own still wait for the write."""

from __future__ import annotations

from typing import Any

import pytest

from fleet_contracts import topics
from fleet_contracts.device import DeviceStatusReported, DeviceStatusReportedEvent, DpReport, TuyaOrigin
from tests.unit.status.fakes import device_topic, history_rows, make

pytestmark = pytest.mark.unit


def report(device: str, tenant: str, product_id: str = "p1", at: int = 10) -> DeviceStatusReportedEvent:
    return DeviceStatusReportedEvent.build(
        DeviceStatusReported(
            device_id=device,
            product_id=product_id,
            origin=TuyaOrigin(protocol=4, push_time_ms=1),
            dps=[DpReport(code="temp", value=215, device_time_ms=at)],
        ),
        source="/fleet/ingest",
        tenant=tenant,
        region="eu",
    )


async def send(br: Any, event: DeviceStatusReportedEvent) -> None:
    await br.publish(topics.DEVICE_EVENTS.encode(event), topics.DEVICE_EVENTS.name, key=event.data.device_id)


async def test_another_projects_events_are_acked_unread_and_change_nothing() -> None:
    broker, writer, store, publisher, history = make()  # the writer serves tenant "t"
    async with device_topic(broker) as br:
        # a product the schema source does not know: looking it up would fail the test (FakeSchemaApi)
        await send(br, report("theirs", "other-project", product_id="unknown-product"))
        await send(br, report("d1", "other-project"))
        consumer = br.consumer
        assert len(consumer.acked) == 2  # at once: nothing waits for a write that will never come
        assert writer.pending_messages == 0

        await send(br, report("d1", "t"))
        assert len(consumer.acked) == 2  # ours waits until its shadow is durable
        await writer.flush_once()  # acked once the batch (shadow and its history journal) is written
        assert len(consumer.acked) == 3

    assert set(store.docs) == {"d1"}
    assert store.docs["d1"].shadow.version == 1
    assert len(publisher.published) == 1
    assert set(history_rows(store, history)) == {"d1|temp|10"}


async def test_an_event_without_a_tenant_match_is_not_merged_even_for_a_known_device() -> None:
    broker, writer, store, _publisher, _ = make()
    async with device_topic(broker) as br:
        await send(br, report("d1", "t"))
        await writer.flush_once()
        before = store.docs["d1"].shadow.version
        await send(br, report("d1", "T", at=99))  # tenants (Tuya access ids) are compared exactly
        await writer.flush_once()

    assert store.docs["d1"].shadow.version == before
    assert store.docs["d1"].shadow.dps["temp"].device_time_ms == 10
