"""`subscribe_device_events`: the one subscriber of ingest's device topic, under TestPulsarBroker."""

from __future__ import annotations

from typing import Annotated, Any

import pytest
from faststream import Context

from fleet_contracts import topics
from fleet_contracts.device import DeviceBound, DeviceBoundEvent, DeviceEvent, TuyaOrigin
from fleet_contracts.envelope import service_source, to_json_bytes
from fleet_shared.pulsar import (
    DeviceSubscription,
    PulsarBroker,
    PulsarMessage,
    TestPulsarBroker,
    subscribe_device_events,
)

pytestmark = pytest.mark.unit


def bound(device_id: str) -> bytes:
    payload = DeviceBound(
        device_id=device_id,
        owner_uid="ay1",
        pairing_token="tok1",
        origin=TuyaOrigin(protocol=20, biz_code="bindUser", push_time_ms=1_764_410_000_000),
    )
    event = DeviceBoundEvent.build(payload, source=service_source("ingest"), tenant="acc1", region="eu")
    return to_json_bytes(event)


async def test_events_reach_the_handler_and_undecodable_bodies_are_dead_lettered_at_once() -> None:
    broker = PulsarBroker()
    handled: list[DeviceEvent] = []
    attempts: list[int] = []
    dead: list[dict[str, Any]] = []

    async def handle(event: DeviceEvent, message: PulsarMessage) -> None:
        attempts.append(message.redelivery_count)
        handled.append(event)

    subscribe_device_events(
        broker,
        handle,
        DeviceSubscription("pairing", max_redeliveries=3, receiver_queue_size=10),
        dead_letter=topics.PAIRING_DEAD_LETTER,
    )

    @broker.subscriber(topics.PAIRING_DEAD_LETTER.name, subscription="ops")
    async def on_dead(body: dict[str, Any], message: Annotated[PulsarMessage, Context("message")]) -> None:
        dead.append(body)

    async with TestPulsarBroker(broker) as br:
        await br.publish(bound("d1"), topics.DEVICE_EVENTS.name, key="d1")
        await br.publish(b'{"type": "not.a.device.event"}', topics.DEVICE_EVENTS.name, key="d2")

    assert [e.data.device_id for e in handled] == ["d1"]
    assert attempts == [0]
    [letter] = dead
    assert letter["data"]["key"] == "d2"
    assert letter["data"]["redelivery_count"] == 0  # rejected, not retried
