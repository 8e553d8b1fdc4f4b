"""The bus's RED metrics against a real Apache Pulsar: a failing handler's deliveries are counted as failed
under its subscription, a good handler's as processed, handler durations and sends are observed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from fleet_shared.pulsar import DeadLetter, InitialPosition, PulsarBroker

pytestmark = pytest.mark.integration


class Reading(BaseModel):
    device_id: str
    seq: int


async def until(predicate: Callable[[], bool], within: float = 30.0) -> None:
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 - polling counters filled by the subscribers' tasks
            await asyncio.sleep(0.05)


async def test_failing_and_good_handlers_are_counted_per_subscription(stack: Any, unique: str) -> None:
    topic = f"persistent://public/default/bus-metrics-{unique}"
    dead = f"persistent://public/default/bus-metrics-dlq-{unique}"
    registry = CollectorRegistry()
    broker = PulsarBroker(stack.pulsar_url, metrics=registry, logger=None)
    good, bad = f"good-{unique}", f"bad-{unique}"

    def sample(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, labels) or 0.0

    def failed(outcome: str) -> float:
        return sample("fleet_bus_messages_failed_total", topic=topic, subscription=bad, outcome=outcome)

    @broker.subscriber(topic, subscription=good, initial_position=InitialPosition.Earliest)
    async def handles(reading: Reading) -> None:
        await asyncio.sleep(0.005)

    @broker.subscriber(
        topic,
        subscription=bad,
        initial_position=InitialPosition.Earliest,
        negative_ack_redelivery_delay=0.1,
        dead_letter=DeadLetter(max_redeliveries=1, topic=dead),
    )
    async def fails(reading: Reading) -> None:
        raise RuntimeError("the database is gone")

    await broker.start()
    try:
        for seq in range(3):
            await broker.publish(Reading(device_id=f"dev-{seq}", seq=seq), topic, key=f"dev-{seq}")
        # each of the 3 fails twice: nacked, then dead-lettered on its redelivery
        await until(lambda: failed("dead_letter") == 3)
        await until(lambda: sample("fleet_bus_messages_processed_total", topic=topic, subscription=good) == 3)
    finally:
        await broker.stop()

    assert failed("nack") == 3
    assert (failed("reject"), failed("ack")) == (0, 0)
    assert sample("fleet_bus_messages_processed_total", topic=topic, subscription=bad) == 6
    for outcome in ("nack", "dead_letter", "reject", "ack"):
        assert sample("fleet_bus_messages_failed_total", topic=topic, subscription=good, outcome=outcome) == 0
    assert sample("fleet_bus_handler_seconds_count", topic=topic, subscription=good) == 3
    assert sample("fleet_bus_handler_seconds_sum", topic=topic, subscription=good) >= 3 * 0.005
    assert sample("fleet_bus_handler_seconds_count", topic=topic, subscription=bad) == 6
    # the sends: the readings, and the dead letters through the same producer
    assert sample("fleet_bus_messages_sent_total", topic=topic) == 3
    assert sample("fleet_bus_send_seconds_count", topic=topic) == 3
    assert sample("fleet_bus_messages_sent_total", topic=dead) == 3
    assert sample("fleet_bus_send_failures_total", topic=topic) == 0
