"""The real Apache Pulsar broker carries a pydantic-validated, keyed message with its properties."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pulsar
import pytest
from pulsar import asyncio as pulsar_asyncio
from pydantic import BaseModel, ConfigDict

from tests.support import Stack

pytestmark = pytest.mark.integration


class DpReport(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    device_id: str
    code: str
    value: int
    t: int


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[pulsar_asyncio.Client]:
    client = pulsar_asyncio.Client(stack.pulsar_url, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))
    yield client
    await client.close()


async def test_keyed_message_round_trip_keeps_key_and_properties(
    client: pulsar_asyncio.Client, unique: str
) -> None:
    topic = f"persistent://public/default/foundation-{unique}"
    consumer = await client.subscribe(
        topic,
        f"sub-{unique}",
        consumer_type=pulsar.ConsumerType.KeyShared,
        initial_position=pulsar.InitialPosition.Earliest,
    )
    producer = await client.create_producer(
        topic, batching_enabled=True, batching_type=pulsar.BatchingType.KeyBased
    )
    sent = [
        DpReport(device_id=f"dev{i % 3}", code="switch_1", value=i, t=1_700_000_000_000 + i) for i in range(9)
    ]
    await asyncio.gather(
        *(
            producer.send(
                report.model_dump_json().encode(),
                partition_key=report.device_id,
                properties={"type": "device.status.reported.v1", "seq": str(i)},
            )
            for i, report in enumerate(sent)
        )
    )

    received: list[tuple[DpReport, str, dict[str, str]]] = []
    for _ in sent:
        message = await asyncio.wait_for(consumer.receive(), timeout=30)
        received.append(
            (DpReport.model_validate_json(message.data()), message.partition_key(), message.properties())
        )
        await consumer.acknowledge(message)

    assert len(received) == len(sent)
    assert {r for r, _, _ in received} == set(sent)
    for report, key, properties in received:
        assert key == report.device_id
        assert properties == {"type": "device.status.reported.v1", "seq": str(sent.index(report))}
    # one key's messages arrive in the order they were sent
    per_key = [r.value for r, key, _ in received if key == "dev0"]
    assert per_key == sorted(per_key)
    await producer.close()
    await consumer.close()


async def test_invalid_body_is_rejected_by_the_contract(client: pulsar_asyncio.Client, unique: str) -> None:
    topic = f"persistent://public/default/foundation-bad-{unique}"
    consumer = await client.subscribe(
        topic, f"sub-{unique}", initial_position=pulsar.InitialPosition.Earliest
    )
    producer = await client.create_producer(topic, batching_enabled=False)
    await producer.send(b'{"device_id": "d", "code": "c", "value": "not-a-number", "t": 1}')
    message = await asyncio.wait_for(consumer.receive(), timeout=30)
    with pytest.raises(ValueError, match="value"):
        DpReport.model_validate_json(message.data())
    await consumer.acknowledge(message)
    await producer.close()
    await consumer.close()
