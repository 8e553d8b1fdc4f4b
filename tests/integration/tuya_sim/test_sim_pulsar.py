"""tuya-sim against the real Apache Pulsar: what a Tuya consumer reads (native Failover consumer,
WebSocket consumer) is exactly what the ground truth says; the official Tuya Python SDK works against the
HTTP server."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import socket
import urllib.parse
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pulsar
import pytest
import uvicorn
from pulsar import asyncio as pulsar_asyncio

from fleet_contracts import topics
from fleet_shared.provisioning import ProvisioningError, PulsarAdmin
from fleet_shared.tuya.codec import DecodedMessage, EncryptionMode, PushCodec
from fleet_shared.tuya.errors import PushMessageRejected
from fleet_tuya_sim.bootstrap import TuyaSim, bootstrap
from fleet_tuya_sim.domain.fleet import FleetSpec
from fleet_tuya_sim.domain.push_messages import MessageFamily
from fleet_tuya_sim.entrypoints.app import create_app
from fleet_tuya_sim.service_layer.simulator import ScenarioSpec
from fleet_tuya_sim.settings import SimSettings
from tests.support import Stack

pytestmark = pytest.mark.integration

PRESENCE = {"online": True, "offline": False, "deviceOnline": True, "deviceOffline": False}


@dataclass(frozen=True)
class Project:
    access_id: str
    access_secret: str
    topic: str
    subscription: str


@pytest.fixture
def project(stack: Stack, unique: str) -> Any:
    """A throwaway Tuya project: tenant = access id, namespace `out`, partitioned topic `event` (11)."""
    access_id = f"simit{unique}"
    admin = PulsarAdmin(stack.pulsar_admin_url)
    admin.call("PUT", f"tenants/{access_id}", {"adminRoles": [], "allowedClusters": admin.clusters()})
    admin.call("PUT", f"namespaces/{access_id}/out")
    admin.call("PUT", f"persistent/{access_id}/out/event/partitions", 11)
    yield Project(
        access_id=access_id,
        access_secret=secrets.token_hex(16),
        topic=topics.tuya_event_topic(access_id),
        subscription=topics.tuya_subscription(access_id),
    )
    for path in (
        f"persistent/{access_id}/out/event/partitions?force=true",
        # the broker refuses forced namespace deletion; empty ones go without
        f"namespaces/{access_id}/out",
        f"tenants/{access_id}",
    ):
        with contextlib.suppress(ProvisioningError):
            admin.call("DELETE", path)


@pytest.fixture
async def pulsar_client(stack: Stack) -> AsyncIterator[pulsar_asyncio.Client]:
    client = pulsar_asyncio.Client(stack.pulsar_url, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))
    yield client
    await client.close()


def _settings(stack: Stack, project: Project, **overrides: Any) -> SimSettings:
    values: dict[str, Any] = {
        "access_id": project.access_id,
        "access_secret": project.access_secret,
        "pulsar_url": stack.pulsar_url,
        "rate_limit_rps": 0,
        "devices": 100,
        "homes": 12,
    }
    values.update(overrides)
    return SimSettings(**values)


@contextlib.asynccontextmanager
async def running(settings: SimSettings, spec: FleetSpec) -> AsyncIterator[TuyaSim]:
    service = bootstrap(settings, create_fleet=False)
    await service.start()
    try:
        await service.simulator.create_fleet(spec)
        yield service
    finally:
        await service.stop()


async def _consume(
    client: pulsar_asyncio.Client, project: Project, expected: int, codec: PushCodec, within_s: float = 90.0
) -> list[tuple[str, str, DecodedMessage | PushMessageRejected]]:
    """(key, tid, decoded or rejection) for `expected` messages, in the order this consumer received them."""
    consumer = await client.subscribe(
        project.topic,
        project.subscription,
        consumer_type=pulsar.ConsumerType.Failover,
        initial_position=pulsar.InitialPosition.Earliest,
    )
    received: list[tuple[str, str, DecodedMessage | PushMessageRejected]] = []
    try:
        async with asyncio.timeout(within_s):
            while len(received) < expected:
                message = await consumer.receive()
                properties = message.properties()
                try:
                    outcome: DecodedMessage | PushMessageRejected = codec.decode(message.data(), properties)
                except PushMessageRejected as exc:
                    outcome = exc
                received.append((message.partition_key(), properties.get("tid", ""), outcome))
                await consumer.acknowledge(message)
        # nothing beyond what the ground truth lists
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                extra = await consumer.receive()
                pytest.fail(f"unexpected extra message {extra.properties()}")
    finally:
        await consumer.close()
    return received


@pytest.mark.parametrize(
    ("family", "encryption"),
    [(MessageFamily.LEGACY, EncryptionMode.GCM), (MessageFamily.IOT_CORE, EncryptionMode.ECB)],
)
async def test_a_fleet_publishes_exactly_its_ground_truth(
    stack: Stack,
    project: Project,
    pulsar_client: pulsar_asyncio.Client,
    family: MessageFamily,
    encryption: EncryptionMode,
) -> None:
    settings = _settings(stack, project, message_family=family, encryption=encryption)
    # Subscribe first (as Tuya creates the subscription with the project), then publish.
    codec = PushCodec(project.access_secret)
    probe = await pulsar_client.subscribe(
        project.topic, project.subscription, consumer_type=pulsar.ConsumerType.Failover
    )
    await probe.close()
    async with running(settings, FleetSpec(seed=11, devices=100, homes=12)) as service:
        sim = service.simulator
        state = sim.start_scenario(ScenarioSpec(rate=150, duration_s=3, churn_rate=0.02))
        await sim.wait_scenario(60)
        assert state.reports == 450
        assert await sim.flush(60)
        truth = sim.truth_snapshot()

    records = truth["messages"]
    assert truth["summary"]["confirmed"] == len(records) > 450
    assert all(r["message_id"] for r in records)
    received = await _consume(pulsar_client, project, len(records), codec)

    # count and identity
    assert len(received) == len(records)
    assert sorted(tid for _, tid, _ in received) == sorted(r["tid"] for r in records)
    by_tid = {r["tid"]: r for r in records}
    for key, tid, outcome in received:
        assert isinstance(outcome, DecodedMessage), outcome
        record = by_tid[tid]
        assert key == record["key"] == outcome.device_id
        assert outcome.protocol == record["protocol"]
        assert outcome.message.kind == record["kind"]
        assert outcome.mode.value == record["mode"] == encryption.value
        assert outcome.data == record["data"]

    # per-device order
    truth_order: dict[str, list[str]] = defaultdict(list)
    for r in sorted(records, key=lambda r: r["seq"]):
        truth_order[r["key"]].append(r["tid"])
    got_order: dict[str, list[str]] = defaultdict(list)
    for key, tid, _ in received:
        got_order[key].append(tid)
    assert got_order == truth_order

    # final values and presence, folded from the stream, equal the ground truth's device state
    values: dict[str, dict[str, tuple[Any, int]]] = defaultdict(dict)
    presence: dict[str, bool] = {}
    for _, _, outcome in received:
        assert isinstance(outcome, DecodedMessage)
        device_id = outcome.device_id or ""
        data = outcome.data
        if outcome.protocol == 4:
            for item in data["status"]:
                values[device_id][item["code"]] = (item["value"], item["t"])
        elif outcome.protocol == 1000:
            for item in data["bizData"]["properties"]:
                values[device_id][item["code"]] = (item["value"], item["time"])
        elif outcome.message.kind in PRESENCE:
            presence[device_id] = PRESENCE[outcome.message.kind]
    devices = truth["fleet"]["devices"]
    assert len(values) > 50
    for device_id, dps in values.items():
        for code, (value, t) in dps.items():
            assert devices[device_id]["dps"][code] == {
                **devices[device_id]["dps"][code],
                "value": value,
                "t": t,
            }
    assert presence
    for device_id, online in presence.items():
        assert devices[device_id]["online"] is online


async def test_chaos_duplicates_shuffles_and_malformed_messages_are_all_accounted_for(
    stack: Stack, project: Project, pulsar_client: pulsar_asyncio.Client
) -> None:
    settings = _settings(stack, project, chaos_duplicate_ratio=0.1, chaos_shuffle_window=20)
    codec = PushCodec(project.access_secret)
    async with running(settings, FleetSpec(seed=5, devices=100, homes=10)) as service:
        sim = service.simulator
        sim.start_scenario(ScenarioSpec(rate=100, duration_s=2, malformed=12))
        await sim.wait_scenario(60)
        assert await sim.flush(60)
        truth = sim.truth_snapshot()
    records = truth["messages"]
    summary = truth["summary"]
    assert summary["malformed"] == 12
    assert summary["duplicates"] > 0
    received = await _consume(pulsar_client, project, len(records), codec)
    assert len(received) == len(records)

    expected_by_tid = {r["tid"]: r["expected"] for r in records}
    for _, tid, outcome in received:
        expected = expected_by_tid[tid]
        if isinstance(outcome, PushMessageRejected):
            assert outcome.reason.value == expected
        elif outcome.message.kind == "unknownProtocol":
            assert expected == "unknown_protocol"
        else:
            assert expected == "accept"
    # duplicates share the tid of their original
    counts: dict[str, int] = defaultdict(int)
    for _, tid, _ in received:
        counts[tid] += 1
    assert sum(n - 1 for n in counts.values()) == summary["duplicates"]
    # despite shuffling, the newest device timestamp per DP gives the ground truth's final values
    newest: dict[tuple[str, str], tuple[int, Any]] = {}
    for _, _, outcome in received:
        if isinstance(outcome, DecodedMessage) and outcome.protocol == 4:
            for item in outcome.data["status"]:
                key = (outcome.data["devId"], item["code"])
                if key not in newest or item["t"] > newest[key][0]:
                    newest[key] = (item["t"], item["value"])
    devices = truth["fleet"]["devices"]
    assert newest
    for (device_id, code), (t, value) in newest.items():
        assert (devices[device_id]["dps"][code]["t"], devices[device_id]["dps"][code]["value"]) == (t, value)


def _websocket_read(url: str, headers: dict[str, str], count: int) -> list[dict[str, Any]]:
    import websocket

    ws = websocket.create_connection(url, header=[f"{k}: {v}" for k, v in headers.items()], timeout=30)
    frames: list[dict[str, Any]] = []
    try:
        while len(frames) < count:
            frame = json.loads(ws.recv())
            frames.append(frame)
            ws.send(json.dumps({"messageId": frame["messageId"]}))
    finally:
        ws.close()
    return frames


async def test_websocket_consumer_reads_the_stream(stack: Stack, project: Project) -> None:
    from fleet_shared.tuya.signing import pulsar_auth_data

    settings = _settings(stack, project, devices=20)
    admin = urllib.parse.urlsplit(stack.pulsar_admin_url)
    url = (
        f"ws://{admin.netloc}/ws/v2/consumer/persistent/{project.access_id}/out/event/"
        f"{project.subscription}?subscriptionType=Failover&ackTimeoutMillis=3000"
    )
    codec = PushCodec(project.access_secret)
    async with running(settings, FleetSpec(seed=2, devices=20, homes=3)) as service:
        sim = service.simulator
        reader = asyncio.create_task(
            asyncio.to_thread(
                _websocket_read, url, pulsar_auth_data(project.access_id, project.access_secret), 5
            )
        )
        await asyncio.sleep(1.5)  # the WebSocket consumer subscribes before anything is published
        sim.report(count=10)
        assert await sim.flush(30)
        frames = await asyncio.wait_for(reader, 60)
        tids = {r.tid for r in sim.truth.messages}
    assert len(frames) == 5
    for frame in frames:
        envelope = base64.b64decode(frame["payload"])
        decoded = codec.decode(envelope, frame.get("properties", {}))
        assert decoded.protocol == 4
        assert frame["key"] == decoded.device_id
        assert frame["properties"]["tid"] in tids
        assert frame["properties"]["em"] == "aes_gcm"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _official_sdk_calls(endpoint: str, project: Project, device_id: str, uid: str) -> dict[str, Any]:
    from tuya_connector import TuyaOpenAPI

    api = TuyaOpenAPI(endpoint, project.access_id, project.access_secret)
    connected = api.connect()
    device = api.get(f"/v1.0/devices/{device_id}")
    batch = api.get("/v2.0/cloud/thing/batch", {"device_ids": device_id})
    token = api.post("/v1.0/device/paring/token", {"paring_type": "EZ", "uid": uid, "time_zone_id": "UTC"})
    return {"connect": connected, "device": device, "batch": batch, "pairing": token}


async def test_official_tuya_connector_works_against_the_http_server(stack: Stack, project: Project) -> None:
    port = _free_port()
    settings = _settings(stack, project, devices=10, homes=2, host="127.0.0.1", port=port, seed=4)
    service = bootstrap(settings)
    server = uvicorn.Server(
        uvicorn.Config(create_app(service), host="127.0.0.1", port=port, log_level="warning")
    )
    serving = asyncio.create_task(server.serve())
    try:
        for _ in range(600):  # up to 30 s
            if server.started:
                break
            await asyncio.sleep(0.05)
        assert server.started
        fleet = service.simulator.fleet
        device = next(d for d in fleet.devices.values() if d.bound)
        assert device.uid is not None
        answers = await asyncio.to_thread(
            _official_sdk_calls, f"http://127.0.0.1:{port}", project, device.device_id, device.uid
        )
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 30)
    assert answers["connect"]["success"] is True, answers["connect"]
    assert answers["device"]["success"] is True, answers["device"]
    assert answers["device"]["result"]["id"] == device.device_id
    assert answers["device"]["result"]["online"] == device.online
    assert answers["batch"]["result"][0]["id"] == device.device_id
    pairing = answers["pairing"]
    assert pairing["success"] is True, pairing
    assert set(pairing["result"]) == {"region", "token", "secret", "expire_time"}
