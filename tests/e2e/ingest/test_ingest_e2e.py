"""ingest end to end on the real Apache Pulsar and MongoDB-wire server: a simulated Tuya fleet streams status
and lifecycle messages (with Tuya-style duplicates and malformed input) through ingest, run as a process."""

from __future__ import annotations

import asyncio
import base64
import random
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pulsar
import pytest
from pulsar import asyncio as pa

from fleet_contracts import topics
from fleet_shared.provisioning import provision
from fleet_shared.tuya.codec import PushCodec
from tests.e2e.ingest.support import (
    EXPECTED_REASONS,
    FleetMessage,
    IngestProcess,
    TopicReader,
    device_stream,
    malformed,
    per_device,
    publish_all,
)
from tests.support import Stack, until

pytestmark = pytest.mark.e2e


@dataclass
class Project:
    access_id: str
    secret: str
    codec: PushCodec
    client: pa.Client
    events: TopicReader
    dead_letters: TopicReader
    ingest: IngestProcess

    @property
    def topic(self) -> str:
        return topics.tuya_event_topic(self.access_id)


@pytest.fixture
async def project(stack: Stack, unique: str, tmp_path: Path) -> AsyncIterator[Project]:
    access_id = f"ingeste2e{unique}"
    await asyncio.to_thread(provision, stack.pulsar_admin_url, access_id)
    secret = secrets.token_hex(16)
    client = pa.Client(stack.pulsar_url, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Warn))
    events = await TopicReader.open(client, topics.DEVICE_EVENTS.name, f"e2e-{unique}", access_id)
    dead = await TopicReader.open(client, topics.INGEST_TUYA_DEAD_LETTER.name, f"e2e-{unique}", access_id)
    ingest = IngestProcess(stack, access_id, secret, f"ingest_e2e_{unique}", tmp_path / "ingest.log")
    try:
        yield Project(access_id, secret, PushCodec(secret), client, events, dead, ingest)
    finally:
        ingest.kill()
        await events.close()
        await dead.close()
        await client.close()


def interleave(streams: list[list[FleetMessage]], rng: random.Random) -> list[FleetMessage]:
    """Shuffle devices against each other, keeping each device's own order (as Tuya's partitions do)."""
    cursors = [0] * len(streams)
    live = [i for i, s in enumerate(streams) if s]
    out: list[FleetMessage] = []
    while live:
        j = rng.randrange(len(live))
        i = live[j]
        out.append(streams[i][cursors[i]])
        cursors[i] += 1
        if cursors[i] == len(streams[i]):
            live[j] = live[-1]
            live.pop()
    return out


async def test_fleet_of_1000_devices_arrives_exactly_once_in_order_and_malformed_input_is_dead_lettered(
    project: Project,
) -> None:
    rng = random.Random(7)
    devices = [f"vdev{n:05d}{project.access_id[-6:]}" for n in range(1000)]
    per_dev = 6
    streams = [device_stream(project.codec, d, per_dev) for d in devices]
    duplicates = 0
    for stream in rng.sample(streams, 100):  # Tuya's duplicates: the same data again, re-encrypted
        at = rng.randrange(len(stream))
        original = stream[at]
        again = device_stream(project.codec, original.key, per_dev)[at]
        stream.insert(at + 1, again)
        duplicates += 1
    bad = [[malformed(project.codec, n, rng.choice(devices))] for n in range(1000)]
    messages = interleave(streams + bad, rng)

    project.ingest.start()
    await project.ingest.wait_ready()
    await publish_all(project.client, project.topic, messages)

    expected_events = len(devices) * per_dev
    events, dead = project.events.messages, project.dead_letters.messages
    await until(
        lambda: len(events) >= expected_events and len(dead) >= 1000,
        120,
        lambda: f"{len(events)} events, {len(dead)} dead letters",
    )
    await asyncio.sleep(2)  # anything extra (a duplicate) would show up now

    bodies = [body for body, _ in events]
    assert len(bodies) == expected_events, "a duplicate reached the internal topic"
    assert len({b["id"] for b in bodies}) == expected_events
    order = per_device(bodies)
    assert order == {d: list(range(per_dev)) for d in devices}  # nothing lost, per-device order kept
    assert all(props["traceparent"] for _, props in events)

    assert len(dead) == 1000
    reasons = {body["data"]["error_type"] for body, _ in dead}
    assert reasons == EXPECTED_REASONS
    for body, _ in dead:
        assert base64.b64decode(body["data"]["payload_base64"])
        assert body["data"]["subscription"] == topics.tuya_subscription(project.access_id)

    assert project.ingest.get("/healthz")[0] == 200
    assert project.ingest.metric("fleet_ingest_duplicates_dropped_total") == duplicates
    assert project.ingest.metric("fleet_ingest_messages_rejected_total") == 1000
    assert project.ingest.stop_gracefully()  # SIGTERM: drains in flight, flushes, exits


async def test_sigkill_mid_stream_and_restart_loses_nothing(project: Project) -> None:
    rng = random.Random(11)
    devices = [f"kdev{n:04d}{project.access_id[-6:]}" for n in range(300)]
    per_dev = 10
    messages = interleave([device_stream(project.codec, d, per_dev) for d in devices], rng)
    expected = len(messages)
    events = project.events.messages

    project.ingest.start()
    await project.ingest.wait_ready()
    publishing = asyncio.ensure_future(publish_all(project.client, project.topic, messages, rate=1500))
    await until(lambda: len(events) >= expected // 3, 60, lambda: f"{len(events)} events")
    project.ingest.kill()  # SIGKILL: sends in flight, acks not sent, dedup records not flushed
    killed_at = len(events)
    await asyncio.sleep(1)
    project.ingest.start()
    await project.ingest.wait_ready()
    await publishing
    await until(
        lambda: len({b["id"] for b, _ in events}) >= expected,
        120,
        lambda: f"{len({b['id'] for b, _ in events})} of {expected} distinct events",
    )
    await asyncio.sleep(2)

    bodies = [body for body, _ in events]
    assert per_device(bodies) == {d: list(range(per_dev)) for d in devices}
    repeats = len(bodies) - expected
    print(f"killed after {killed_at} events; {repeats} redelivered duplicates reached the topic (same ids)")
    assert project.ingest.stop_gracefully()
