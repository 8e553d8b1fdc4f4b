"""ingest's Tuya topic adapter on the real Apache Pulsar: each message is acked on its own (a cumulative ack
would also ack earlier messages a handover has not delivered yet: issue 14's loss), and each delivery
carries its position on its partition (what the handover guard compares)."""

from __future__ import annotations

import asyncio
import contextlib

import pulsar
import pytest
from pulsar import asyncio as pa

from fleet_contracts import topics
from fleet_ingest.adapters.tuya_consumer import PulsarTuyaSource
from fleet_ingest.ports import Received
from tests.support import Stack

pytestmark = pytest.mark.integration


async def publish(stack: Stack, access_id: str, count: int) -> None:
    client = pa.Client(stack.pulsar_url, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))
    try:
        producer = await client.create_producer(topics.tuya_event_topic(access_id), batching_enabled=False)
        for n in range(count):
            await producer.send(b"m%d" % n, partition_key="dev1")
        await producer.close()
    finally:
        await client.close()


async def receive(source: PulsarTuyaSource, count: int) -> list[Received]:
    """`count` messages, or fewer if no more come within 15 s."""
    out: list[Received] = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(15):
            while len(out) < count:
                out.extend(source.receive_ready(count - len(out)) or [await source.receive()])
    return out


async def test_each_message_is_acked_alone_and_an_unacked_earlier_one_comes_again(
    stack: Stack, access_id: str, source: PulsarTuyaSource
) -> None:
    await publish(stack, access_id, 3)
    await source.subscribe()
    first = await receive(source, 3)
    assert [r.delivery.payload for r in first] == [b"m0", b"m1", b"m2"]
    positions = [r.delivery.position for r in first]
    assert positions == sorted(positions), positions
    assert len({p[0] for p in positions if p}) == 1, positions  # one ledger
    assert all(p is not None and p[2] == -1 for p in positions)  # unbatched: no batch index

    source.acknowledge([first[1]])  # m1 only: a cumulative ack would take m0 with it
    await source.close_consumer()  # flushes the client's grouped acks; the rest is redelivered
    await source.subscribe()
    again = await receive(source, 2)
    assert [r.delivery.payload for r in again] == [b"m0", b"m2"]
    assert [r.delivery.position for r in again] == [positions[0], positions[2]]
