"""The bus's RED metrics (fleet_shared.pulsar.metrics): per subscription what came of each delivery and how
long it took, per topic what was sent; bounded labels, children resolved once."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import pulsar
import pytest
from faststream.exceptions import NackMessage
from faststream.middlewares import AckPolicy
from faststream.response.publish_type import PublishType
from prometheus_client import CollectorRegistry
from pulsar.asyncio import PulsarException
from pydantic import BaseModel

from fleet_shared.pulsar import DeadLetter, InlineContext, PulsarBroker, PulsarMessage, TestPulsarBroker
from fleet_shared.pulsar.message import PulsarPublishCommand
from fleet_shared.pulsar.metrics import OUTCOMES, bus_metrics
from fleet_shared.pulsar.producer import PulsarProducer
from fleet_shared.pulsar.rpc import default_reply_topic

pytestmark = pytest.mark.unit

TOPIC = "persistent://fleet/test/readings"


class Reading(BaseModel):
    device_id: str
    value: int


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def failed(registry: CollectorRegistry, outcome: str, subscription: str = "status") -> float:
    return value(
        registry, "fleet_bus_messages_failed_total", topic=TOPIC, subscription=subscription, outcome=outcome
    )


def processed(registry: CollectorRegistry, subscription: str = "status") -> float:
    return value(registry, "fleet_bus_messages_processed_total", topic=TOPIC, subscription=subscription)


def observed(registry: CollectorRegistry, subscription: str = "status") -> float:
    return value(registry, "fleet_bus_handler_seconds_count", topic=TOPIC, subscription=subscription)


async def test_a_handled_message_is_processed_observed_and_not_failed() -> None:
    registry = CollectorRegistry()
    broker = PulsarBroker(metrics=registry)

    @broker.subscriber(TOPIC, subscription="status")
    async def on_reading(reading: Reading) -> None:
        await asyncio.sleep(0.01)

    async with TestPulsarBroker(broker) as br:
        for i in range(3):
            await br.publish(Reading(device_id=f"d{i}", value=i), TOPIC, key=f"d{i}")

    assert processed(registry) == 3
    assert observed(registry) == 3
    assert value(registry, "fleet_bus_handler_seconds_sum", topic=TOPIC, subscription="status") >= 0.03
    # every outcome's series exists from the start, at zero
    assert [failed(registry, o) for o in OUTCOMES] == [0, 0, 0, 0]
    assert (
        registry.get_sample_value(
            "fleet_bus_messages_failed_total", {"topic": TOPIC, "subscription": "status", "outcome": "nack"}
        )
        == 0
    )


async def test_nacks_then_the_dead_letter_are_counted_by_outcome() -> None:
    registry = CollectorRegistry()
    broker = PulsarBroker(metrics=registry)

    @broker.subscriber(TOPIC, subscription="status", dead_letter=DeadLetter(max_redeliveries=2, topic="dlq"))
    async def always_fails(reading: Reading) -> None:
        raise ValueError("bad reading")

    async with TestPulsarBroker(broker) as br:
        await br.publish(Reading(device_id="d1", value=7), TOPIC, key="d1")

    assert processed(registry) == 3  # the delivery and its two redeliveries
    assert observed(registry) == 3
    assert (failed(registry, "nack"), failed(registry, "dead_letter")) == (2, 1)
    assert (failed(registry, "reject"), failed(registry, "ack")) == (0, 0)


async def test_a_rejected_message_is_counted_once_whether_dead_lettered_or_dropped() -> None:
    registry = CollectorRegistry()
    broker = PulsarBroker(metrics=registry)

    @broker.subscriber(
        TOPIC, subscription="with-dlq", dead_letter=DeadLetter(max_redeliveries=5, topic="dlq")
    )
    async def malformed(message: Annotated[PulsarMessage, InlineContext("message")]) -> None:
        await message.reject()  # what subscribe_device_events does with a body that is no device event

    @broker.subscriber(TOPIC, subscription="without-dlq")
    async def dropped(message: Annotated[PulsarMessage, InlineContext("message")]) -> None:
        await message.reject()

    async with TestPulsarBroker(broker) as br:
        await br.publish(b"not json", TOPIC)

    for subscription in ("with-dlq", "without-dlq"):
        assert processed(registry, subscription) == 1
        assert [failed(registry, o, subscription) for o in OUTCOMES] == [0, 0, 1, 0]


async def test_a_failure_acked_by_the_ack_policy_and_a_handler_nack_are_failures() -> None:
    registry = CollectorRegistry()
    broker = PulsarBroker(metrics=registry)

    @broker.subscriber(TOPIC, subscription="acks", ack_policy=AckPolicy.ACK)
    async def broken(reading: Reading) -> None:
        raise KeyError("no shadow")

    nacked: list[int] = []

    @broker.subscriber(TOPIC, subscription="nacks")
    async def nacks_once(reading: Reading) -> None:
        if not nacked:
            nacked.append(1)
            raise NackMessage

    async with TestPulsarBroker(broker) as br:
        await br.publish(Reading(device_id="d1", value=1), TOPIC)

    assert [failed(registry, o, "acks") for o in OUTCOMES] == [0, 0, 0, 1]
    assert [failed(registry, o, "nacks") for o in OUTCOMES] == [1, 0, 0, 0]
    assert (processed(registry, "acks"), processed(registry, "nacks")) == (1, 2)


async def test_labels_are_the_subscribers_topic_and_subscription_only() -> None:
    registry = CollectorRegistry()
    broker = PulsarBroker(metrics=registry)

    @broker.subscriber(TOPIC, subscription="status")
    async def on_reading(reading: Reading) -> None: ...

    async with TestPulsarBroker(broker) as br:
        for i in range(5):
            await br.publish(Reading(device_id=f"dev-{i}", value=i), TOPIC, key=f"dev-{i}")

    for family in registry.collect():
        if family.name.startswith("fleet_bus_"):
            for sample in family.samples:
                assert set(sample.labels) <= {"topic", "subscription", "outcome", "le"}, sample
                assert not any("dev-" in v for v in sample.labels.values()), sample


async def test_metrics_none_registers_nothing_and_a_registry_gets_them_once() -> None:
    registry = CollectorRegistry()
    broker = PulsarBroker(metrics=None)

    @broker.subscriber(TOPIC, subscription="status")
    async def on_reading(reading: Reading) -> None: ...

    async with TestPulsarBroker(broker) as br:
        await br.publish(Reading(device_id="d1", value=1), TOPIC)
    assert broker.config.broker_config.bus_metrics is None
    # two brokers on one registry share the metrics instead of failing on a duplicate registration
    first, second = PulsarBroker(metrics=registry), PulsarBroker(metrics=registry)
    assert first.config.broker_config.bus_metrics is second.config.broker_config.bus_metrics
    assert bus_metrics(registry) is first.config.broker_config.bus_metrics


class Producer:
    """Like `pulsar.asyncio.Producer`: sends complete after a moment, or fail when told to."""

    def __init__(self) -> None:
        self.fail = False

    async def send(self, content: bytes, **_: Any) -> str:
        await asyncio.sleep(0.002)
        if self.fail:
            raise PulsarException(pulsar.Result.Timeout)
        return "id"

    def is_connected(self) -> bool:
        return True

    async def flush(self) -> None: ...

    async def close(self) -> None: ...


class Client:
    def __init__(self) -> None:
        self.producers: dict[str, Producer] = {}

    async def create_producer(self, topic: str, **_: Any) -> Producer:
        return self.producers.setdefault(topic, Producer())


def command(topic: str) -> PulsarPublishCommand:
    return PulsarPublishCommand(b"{}", topic=topic, _publish_type=PublishType.PUBLISH)


async def test_sends_are_counted_and_timed_per_topic_and_failures_apart() -> None:
    registry = CollectorRegistry()
    producer = PulsarProducer(reply_topic="replies", metrics=bus_metrics(registry))
    client = Client()
    producer.connect(client, None, None)  # type: ignore[arg-type]
    await asyncio.gather(*(producer.publish(command("a")) for _ in range(3)))  # the first creates it
    await producer.publish(command("a"))
    await producer.publish(command("b"))
    client.producers["b"].fail = True
    with pytest.raises(PulsarException):
        await producer.publish(command("b"))

    assert value(registry, "fleet_bus_messages_sent_total", topic="a") == 4
    assert value(registry, "fleet_bus_send_seconds_count", topic="a") == 4
    assert value(registry, "fleet_bus_send_seconds_sum", topic="a") >= 4 * 0.002
    assert value(registry, "fleet_bus_messages_sent_total", topic="b") == 1
    assert value(registry, "fleet_bus_send_failures_total", topic="b") == 1
    assert value(registry, "fleet_bus_send_failures_total", topic="a") == 0


def test_every_reply_topic_is_one_label() -> None:
    metrics = bus_metrics(CollectorRegistry())
    first, second = metrics.topic(default_reply_topic()), metrics.topic(default_reply_topic())
    assert first.sent is second.sent
    assert first.sent._labelvalues == ("(replies)",)
