"""`just demo`: prove the stack does its job end to end: a keyed event through Pulsar and a document
through MongoDB, with where each one went."""

from __future__ import annotations

import asyncio
import time
import uuid

import pulsar
from pulsar import asyncio as pulsar_asyncio
from pymongo import MongoClient

from .config import StackConfig


async def _pulsar_round_trip(config: StackConfig) -> str:
    topic = f"persistent://public/default/demo-{uuid.uuid4().hex[:8]}"
    client = pulsar_asyncio.Client(config.pulsar_url, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))
    try:
        consumer = await client.subscribe(
            topic,
            "demo",
            consumer_type=pulsar.ConsumerType.KeyShared,
            initial_position=pulsar.InitialPosition.Earliest,
        )
        producer = await client.create_producer(topic, batching_enabled=False)
        sent = time.perf_counter()
        await producer.send(b'{"hello": "fleet"}', partition_key="device-1", properties={"demo": "yes"})
        message = await consumer.receive()
        await consumer.acknowledge(message)
        took = (time.perf_counter() - sent) * 1000
        return (
            f"{topic}: key={message.partition_key()} properties={message.properties()} "
            f"body={message.data().decode()} in {took:.1f} ms"
        )
    finally:
        await client.close()


def _mongo_round_trip(config: StackConfig) -> str:
    client: MongoClient[dict[str, object]] = MongoClient(config.mongodb_uri, serverSelectionTimeoutMS=5000)
    try:
        collection = client["fleet_demo"]["devices"]
        collection.update_one({"_id": "device-1"}, {"$inc": {"seen": 1}}, upsert=True)
        return f"fleet_demo.devices: {collection.find_one({'_id': 'device-1'})}"
    finally:
        client.close()


def main() -> None:
    config = StackConfig.load()
    print("Pulsar round trip:", asyncio.run(_pulsar_round_trip(config)))
    print("MongoDB round trip:", _mongo_round_trip(config))


if __name__ == "__main__":
    main()
