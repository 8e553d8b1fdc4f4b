"""What the ingest e2e tests drive: a simulated Tuya fleet on Pulsar, ingest as a process, and readers of the
internal topics (filtered by tenant, since other tests share them)."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pulsar
from pulsar import asyncio as pa

from fleet_shared.tuya.codec import EncryptionMode, PushCodec
from tests.support import ServiceProcess, Stack

T0 = 1_750_000_000_000


@dataclass
class FleetMessage:
    """One message the simulated cloud publishes; `expect` is (device, seq) for good ones, None for bad."""

    payload: bytes
    properties: dict[str, str]
    key: str
    expect: tuple[str, int] | None


def device_stream(codec: PushCodec, device: str, count: int) -> list[FleetMessage]:
    """online, status reports (protocol 4 and 1000 alternately), offline: `count` messages, seq 0..count-1."""
    out: list[FleetMessage] = []
    for seq in range(count):
        t = T0 + seq * 1000
        if seq == 0:
            protocol, data = 20, {"devId": device, "bizCode": "online", "bizData": {"time": t, "uid": "u1"}}
        elif seq == count - 1:
            protocol, data = 1001, {"bizCode": "deviceOffline", "bizData": {"devId": device, "time": t}}
        elif seq % 2:
            protocol = 4
            data = {
                "dataId": f"{device}-{seq}",
                "devId": device,
                "status": [{"code": "seq", "value": seq, "t": t}],
            }
        else:
            protocol = 1000
            data = {
                "bizCode": "devicePropertyMessage",
                "bizData": {
                    "dataId": f"{device}-{seq}",
                    "devId": device,
                    "properties": [{"code": "seq", "dpId": 1, "time": t, "value": seq}],
                },
            }
        mode = EncryptionMode.GCM if seq % 3 else EncryptionMode.ECB
        encoded = codec.encode(data, protocol=protocol, mode=mode, t=t)
        out.append(FleetMessage(encoded.payload(), encoded.properties, device, (device, seq)))
    return out


def seq_of(event: dict[str, Any]) -> int:
    """The seq a published event stands for (inverse of `device_stream`)."""
    data = event["data"]
    if event["type"] == "device.status.reported.v1":
        return int(data["dps"][0]["value"])
    return int((data["device_time_ms"] - T0) // 1000)


def malformed(codec: PushCodec, n: int, device: str) -> FleetMessage:
    """Bad input of five kinds: not JSON, no protocol, bad base64, wrong key, decoded-but-invalid."""
    kind = n % 5
    if kind == 0:
        payload, props = b"\x00garbage %d" % n, {}
    elif kind == 1:
        payload, props = orjson.dumps({"pv": "2.0", "t": T0, "data": "AAAA", "n": n}), {}
    elif kind == 2:
        payload, props = orjson.dumps({"protocol": 4, "pv": "2.0", "t": T0 + n, "data": "!!not base64!!"}), {}
    elif kind == 3:
        other = PushCodec("0" * 32)
        encoded = other.encode({"devId": device, "n": n}, protocol=4)
        payload, props = encoded.payload(), encoded.properties
    else:
        encoded = codec.encode(
            {"devId": device, "bizCode": "bindUser", "bizData": {"n": n}}, protocol=20, t=T0 + n
        )
        payload, props = encoded.payload(), encoded.properties
    return FleetMessage(payload, props, device, None)


EXPECTED_REASONS = {"envelope", "decode", "decrypt", "contract"}


async def publish_all(
    client: pa.Client, topic: str, messages: list[FleetMessage], *, rate: float = 0.0
) -> None:
    """Publish in list order (per key order holds); `rate` messages/s if set, else as fast as possible."""
    producer = await client.create_producer(
        topic,
        batching_enabled=True,
        batching_type=pulsar.BatchingType.KeyBased,
        batching_max_publish_delay_ms=5,
        max_pending_messages=5000,
        block_if_queue_full=False,
    )
    try:
        started = time.monotonic()
        window: list[asyncio.Future[Any]] = []
        for i, m in enumerate(messages):
            window.append(
                asyncio.ensure_future(producer.send(m.payload, properties=m.properties, partition_key=m.key))
            )
            if len(window) >= 2000:
                await asyncio.gather(*window)
                window = []
            if rate and i % 100 == 99:
                ahead = (i + 1) / rate - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
        await asyncio.gather(*window)
        await producer.flush()
    finally:
        await producer.close()


@dataclass
class TopicReader:
    """Reads one internal topic from a fresh subscription, keeping only this test's tenant."""

    consumer: pa.Consumer
    tenant: str
    messages: list[tuple[dict[str, Any], dict[str, str]]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, client: pa.Client, topic: str, subscription: str, tenant: str) -> TopicReader:
        consumer = await client.subscribe(
            topic,
            subscription,
            consumer_type=pulsar.ConsumerType.Exclusive,
            initial_position=pulsar.InitialPosition.Latest,
            receiver_queue_size=5000,
        )
        reader = cls(consumer, tenant)
        reader.task = asyncio.ensure_future(reader._run())
        return reader

    async def _run(self) -> None:
        while True:
            msg = await self.consumer.receive()
            body = orjson.loads(msg.data())
            if body.get("tenant") == self.tenant:
                self.messages.append((body, msg.properties()))
            await self.consumer.acknowledge(msg)

    async def close(self) -> None:
        try:
            await self.consumer.unsubscribe()  # the subscription is throwaway; this also ends the receive
        except Exception:  # e.g. the broker is gone or the subscription already went: closing still ends it
            await self.consumer.close()
        if self.task is not None:
            await asyncio.gather(self.task, return_exceptions=True)


class IngestProcess(ServiceProcess):
    """The `fleet-ingest` console script with this test's tenant, secret and database."""

    def __init__(self, stack: Stack, access_id: str, secret: str, database: str, log: Path) -> None:
        super().__init__(
            "ingest",
            log=log,
            stack=stack,
            env={
                "FLEET_TUYA_ACCESS_ID": access_id,
                "FLEET_TUYA_ACCESS_SECRET": secret,
                "FLEET_INGEST_DATABASE": database,
            },
        )

    def stop_gracefully(self) -> bool:
        """SIGTERM; True if it drained and exited by itself (nothing left unacked at the stop)."""
        return self.stopped_gracefully(self.terminate()) and b"stopping with" not in self.log.read_bytes()


def per_device(events: list[dict[str, Any]]) -> dict[str, list[int]]:
    """Device -> the seqs of its events in arrival order, after dropping repeated event ids."""
    seen: set[str] = set()
    out: dict[str, list[int]] = defaultdict(list)
    for event in events:
        if event["id"] in seen:
            continue
        seen.add(event["id"])
        out[event["subject"]].append(seq_of(event))
    return out
