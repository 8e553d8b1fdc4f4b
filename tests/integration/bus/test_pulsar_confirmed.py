"""The bus's public fast paths against a real Apache Pulsar: confirmed sends (tickets, in call order, per
key, on the shared producer's flusher), batched receive and cumulative acks."""

from __future__ import annotations

import asyncio
from typing import Any

import pulsar
import pytest
from pulsar import asyncio as pa

from fleet_shared.pulsar import (
    Confirmations,
    ConsumerType,
    InitialPosition,
    ProducerOptions,
    PulsarBroker,
    acknowledge_cumulative,
    receive_ready,
)

pytestmark = pytest.mark.integration


def topic_name(unique: str, name: str) -> str:
    return f"persistent://public/default/confirmed-{name}-{unique}"


async def read(consumer: pa.Consumer, count: int) -> list[pulsar.Message]:
    out = []
    async with asyncio.timeout(30):
        for _ in range(count):
            out.append(await consumer.receive())
    return out


async def test_confirmed_sends_arrive_in_call_order_per_key_with_properties(stack: Any, unique: str) -> None:
    topic = topic_name(unique, "order")
    broker = PulsarBroker(stack.pulsar_url)
    client = await broker.connect()
    consumer = await client.subscribe(topic, "check", consumer_type=ConsumerType.Exclusive)
    try:
        confirmations = Confirmations()
        # KeyBased with 200 keys: the case the shared batch flusher bounds the delay for.
        sender = await broker.pulsar_producer.confirmed_sender(
            topic, confirmations, ProducerOptions(batching_max_publish_delay_ms=50, max_pending_messages=2000)
        )
        sends = [
            sender.send(f"{key}:{n}".encode(), f"dev{key}", {"n": str(n)})
            for n in range(5)
            for key in range(200)
        ]
        async with asyncio.timeout(30):
            for send in sends:
                await confirmations.wait(send)
        assert all(s.done and s.error is None for s in sends)
        assert confirmations.failures == 0
        assert sender.is_connected()

        got = await read(consumer, len(sends))
        per_key: dict[str, list[int]] = {}
        for message in got:
            key, n = message.data().decode().split(":")
            assert message.partition_key() == f"dev{key}"
            assert message.properties() == {"n": n}
            per_key.setdefault(key, []).append(int(n))
        assert per_key == {str(key): list(range(5)) for key in range(200)}
    finally:
        await consumer.close()
        await broker.stop()
    assert not sender.is_connected()  # closed with the broker's producer
    with pytest.raises(RuntimeError, match="closed"):
        sender.send(b"late", None, {})


async def test_a_send_that_cannot_be_persisted_fails_its_ticket(stack: Any, unique: str) -> None:
    topic = topic_name(unique, "fails")
    broker = PulsarBroker(stack.pulsar_url)
    await broker.connect()
    try:
        confirmations = Confirmations()
        sender = await broker.pulsar_producer.confirmed_sender(
            topic, confirmations, ProducerOptions(batching=False)
        )
        too_big = sender.send(b"x" * (6 * 1024 * 1024), "k", {})  # above the broker's 5 MB message limit
        async with asyncio.timeout(30):
            await confirmations.wait(too_big)
        assert too_big.error is not None
        assert confirmations.failures == 1
    finally:
        await broker.stop()


async def test_receive_ready_then_cumulative_ack_leaves_only_the_rest_for_the_next_consumer(
    stack: Any, unique: str
) -> None:
    topic = topic_name(unique, "ack")
    client = pa.Client(stack.pulsar_url, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Warn))
    try:
        producer = await client.create_producer(topic, batching_enabled=False)
        for n in range(50):
            await producer.send(str(n).encode())

        def subscribe() -> Any:
            return client.subscribe(
                topic,
                "failover",
                consumer_type=ConsumerType.Failover,
                initial_position=InitialPosition.Earliest,
            )

        consumer = await subscribe()
        got = [await consumer.receive()]
        async with asyncio.timeout(30):
            while len(got) < 50:
                more = receive_ready(consumer, 50 - len(got))
                got.extend(more)
                if not more:
                    await asyncio.sleep(0.01)
        assert [int(m.data()) for m in got] == list(range(50))
        assert receive_ready(consumer, 10) == []  # nothing more: returns at once

        acknowledge_cumulative(consumer, [got[29]])  # 0..29 done
        await asyncio.sleep(0.5)  # the ack is fire and forget
        await consumer.close()

        consumer = await subscribe()
        again = await read(consumer, 20)
        assert [int(m.data()) for m in again] == list(range(30, 50))
        await consumer.close()
    finally:
        await client.close()
