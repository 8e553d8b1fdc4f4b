"""Helpers of the status e2e tests: a simulated fleet with its ground truth, a fake Tuya OpenAPI for the DP
schemas, the status service as a subprocess, and readers of its topics."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pulsar
import uvicorn
from fastapi import FastAPI

from fleet_contracts import topics
from fleet_contracts.device import (
    DeviceBound,
    DeviceBoundEvent,
    DeviceOffline,
    DeviceOfflineEvent,
    DeviceOnline,
    DeviceOnlineEvent,
    DeviceStatusReported,
    DeviceStatusReportedEvent,
    DpReport,
    TuyaOrigin,
)
from tests.support import ServiceProcess, Stack, free_port

PRODUCT = "e2eprod"
# the Tuya project (access id) status serves: the events' `tenant`, or status acks them unread
TENANT = "e2eaccess"
API_KEY = "e2e-status-api-key-0123456789abcdef"
# the DP schema the fake OpenAPI serves (REFERENCE §6: `values` is a JSON string)
SPEC_STATUS = [
    {"code": "switch_1", "dp_id": 1, "type": "Boolean", "values": "{}"},
    {"code": "temp", "dp_id": 2, "type": "Integer", "values": '{"min":-400,"max":1000,"scale":1,"step":1}'},
    {"code": "mode", "dp_id": 3, "type": "Enum", "values": '{"range":["auto","cool","heat"]}'},
    {"code": "fault", "dp_id": 4, "type": "Bitmap", "values": '{"label":["sensor","motor"],"maxlen":2}'},
]


# --- the fleet and its ground truth ------------------------------------------------------------------------


@dataclass
class Truth:
    dps: dict[str, tuple[int, Any]] = field(default_factory=dict)  # code -> (device time, expected value)
    online: tuple[int, bool] | None = None
    owner: str | None = None
    # every report, as the history API must give it back: (code, device time) -> value; (time, online)
    history: dict[tuple[str, int], Any] = field(default_factory=dict)
    presence_history: set[tuple[int, bool]] = field(default_factory=set)


def _expected(code: str, raw: Any) -> Any:
    if code == "temp":
        return round(raw / 10, 1)
    if code == "fault":
        return [name for bit, name in enumerate(("sensor", "motor")) if raw >> bit & 1]
    return raw


def fleet(
    prefix: str, devices: int, seed: int = 7, tenant: str = TENANT
) -> tuple[list[Any], dict[str, Truth]]:
    """Events for `devices` devices (in order) and what every shadow must end as, of the Tuya project
    `tenant` (a run of its own: status instances of other runs on the shared topic ack them unread).

    Device times are unique per device and DP, so the truth is simply the report with the latest time.
    """
    rnd = random.Random(seed)
    origin = TuyaOrigin(protocol=4, push_time_ms=1)
    base = int(time.time() * 1000) - 3_600_000
    events: list[Any] = []
    truth: dict[str, Truth] = {}
    for i in range(devices):
        device = f"{prefix}-{i:05d}"
        t = Truth(owner=f"owner-{i % 17}")
        truth[device] = t
        common: dict[str, Any] = {"source": "/fleet/ingest", "tenant": tenant, "region": "eu"}
        events.append(
            DeviceBoundEvent.build(
                DeviceBound(
                    device_id=device,
                    product_id=PRODUCT,
                    origin=TuyaOrigin(protocol=20, biz_code="bindUser", push_time_ms=base),
                    owner_uid=t.owner,
                    home_id="home-1",
                ),
                event_id=f"{device}:bound",
                **common,
            )
        )
        times = rnd.sample(range(1, 100_000), 8)
        for n, online in enumerate((True, False, True)[: rnd.randint(1, 3)]):
            at = base + times[n]
            cls, payload = (
                (DeviceOnlineEvent, DeviceOnline) if online else (DeviceOfflineEvent, DeviceOffline)
            )
            events.append(
                cls.build(
                    payload(device_id=device, product_id=PRODUCT, origin=origin, device_time_ms=at),
                    event_id=f"{device}:presence:{n}",
                    **common,
                )
            )
            t.presence_history.add((at, online))
            if t.online is None or at > t.online[0]:
                t.online = (at, online)
        for n in range(3):
            at = base + times[3 + n]
            raw = {
                "switch_1": rnd.random() < 0.5,
                "temp": rnd.randint(-400, 1000),
                "mode": rnd.choice(["auto", "cool", "heat"]),
                "fault": rnd.randint(0, 3),
            }
            codes = rnd.sample(sorted(raw), 2)
            events.append(
                DeviceStatusReportedEvent.build(
                    DeviceStatusReported(
                        device_id=device,
                        product_id=PRODUCT,
                        origin=origin,
                        dps=[DpReport(code=c, value=raw[c], device_time_ms=at) for c in codes],
                    ),
                    event_id=f"{device}:status:{n}",
                    **common,
                )
            )
            for c in codes:
                t.history[(c, at)] = _expected(c, raw[c])
                if c not in t.dps or at > t.dps[c][0]:
                    t.dps[c] = (at, _expected(c, raw[c]))
    return events, truth


def shuffled_with_duplicates(events: list[Any], duplicate_ratio: float = 0.2, seed: int = 11) -> list[Any]:
    rnd = random.Random(seed)
    out = events + rnd.sample(events, int(len(events) * duplicate_ratio))
    rnd.shuffle(out)
    return out


def publish(stack: Stack, events: list[Any]) -> None:
    client = pulsar.Client(stack.pulsar_url, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Warn))
    try:
        producer = client.create_producer(
            topics.DEVICE_EVENTS.name, batching_type=pulsar.BatchingType.KeyBased, block_if_queue_full=True
        )
        for e in events:
            producer.send_async(topics.DEVICE_EVENTS.encode(e), None, partition_key=e.data.device_id)
        producer.flush()
    finally:
        client.close()


def mismatches(shadows: dict[str, dict[str, Any]], truth: dict[str, Truth]) -> list[str]:
    """What differs between the shadows served by the API and the truth (empty when all match)."""
    problems: list[str] = []
    for device, t in truth.items():
        s = shadows.get(device)
        if s is None:
            problems.append(f"{device}: no shadow")
            continue
        got = {code: (dp["device_time_ms"], dp["value"]) for code, dp in s["dps"].items()}
        if got != t.dps:
            problems.append(f"{device}: dps {got} != {t.dps}")
        presence = s["presence"]
        if t.online is not None and (presence["changed_at_ms"], presence["online"]) != t.online:
            problems.append(f"{device}: presence {presence} != {t.online}")
        if s["binding"] != {"state": "bound", "owner_uid": t.owner, "home_id": "home-1"}:
            problems.append(f"{device}: binding {s['binding']}")
    return problems


# --- a fake Tuya OpenAPI (only what status asks: token, specifications) -----------------------------------


def fake_openapi() -> FastAPI:
    app = FastAPI()

    def ok(result: Any) -> dict[str, Any]:
        return {"success": True, "result": result, "t": int(time.time() * 1000), "tid": "e2e"}

    @app.get("/v1.0/token")
    async def token() -> dict[str, Any]:
        return ok({"access_token": "at", "refresh_token": "rt", "expire_time": 7200, "uid": "e2e"})

    @app.get("/{version}/devices/{device_id}/specifications")
    async def specifications(version: str, device_id: str) -> dict[str, Any]:
        return ok({"category": "wk", "functions": [], "status": SPEC_STATUS})

    return app


class FakeOpenApi:
    def __init__(self) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(fake_openapi(), host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.task = asyncio.create_task(self.server.serve())
        while not self.server.started:  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        self.server.should_exit = True
        if self.task is not None:
            await self.task


# --- the service ----------------------------------------------------------------------------------------


class StatusProcess(ServiceProcess):
    """The `fleet-status` console script with this test's database and subscription, its key seeded."""

    def __init__(
        self,
        stack: Stack,
        *,
        database: str,
        subscription: str,
        openapi_url: str,
        log: Path,
        tenant: str = TENANT,
    ) -> None:
        super().__init__(
            "status",
            log=log,
            stack=stack,
            api_key=API_KEY,
            env={
                "FLEET_TUYA_ACCESS_ID": tenant,
                "FLEET_TUYA_ACCESS_SECRET": "e2esecret",
                "FLEET_TUYA_OPENAPI_URL": openapi_url,
                "FLEET_STATUS_DATABASE": database,
                "FLEET_STATUS_SUBSCRIPTION": subscription,
                "FLEET_STATUS_RECONCILE_INTERVAL_S": "0",
            },
        )

    def shadows(self) -> dict[str, dict[str, Any]]:
        """Every shadow, through the paginated list API."""
        out: dict[str, dict[str, Any]] = {}
        cursor = ""
        while True:
            code, page = self.get(f"/v1/devices?product_id={PRODUCT}&limit=500{cursor}")
            assert code == 200, page
            for item in page["items"]:
                out[item["device_id"]] = item
            if not page["next_cursor"]:
                return out
            cursor = f"&cursor={page['next_cursor']}"

    def history_mismatches(self, truth: dict[str, Truth]) -> list[str]:
        """Devices whose DP history or presence timeline (through the API) differs from every report sent."""
        problems: list[str] = []
        for device, t in truth.items():
            code, page = self.get(f"/v1/devices/{device}/history", {"since_ms": "0", "limit": "100"})
            assert code == 200, page
            got = {(r["code"], r["device_time_ms"]): r["value"] for r in page["items"]}
            times = [r["device_time_ms"] for r in page["items"]]
            if got != t.history or len(times) != len(t.history) or times != sorted(times, reverse=True):
                problems.append(f"{device}: history {page['items']} != {t.history}")
            code, page = self.get(f"/v1/devices/{device}/presence", {"since_ms": "0", "limit": "100"})
            assert code == 200, page
            timeline = [(r["device_time_ms"], r["online"]) for r in page["items"]]
            if sorted(timeline, reverse=True) != timeline or set(timeline) != t.presence_history:
                problems.append(f"{device}: presence timeline {timeline} != {t.presence_history}")
        return problems

    async def wait_for_history(self, truth: dict[str, Truth], within: float) -> list[str]:
        """Until the history of these devices holds every report once (an older report may still be on its
        way when the shadows already match)."""
        deadline = time.monotonic() + within
        problems: list[str] = ["not checked"]
        while time.monotonic() < deadline:
            try:
                problems = await asyncio.to_thread(self.history_mismatches, truth)
            except OSError as e:  # a request timed out on a loaded machine: ask again
                problems = [repr(e)]
            else:
                if not problems:
                    return []
                # ask again about the devices that differed only
                differing = {p.split(":", 1)[0] for p in problems}
                truth = {d: t for d, t in truth.items() if d in differing}
            await asyncio.sleep(2.0)
        return problems

    async def wait_for_truth(self, truth: dict[str, Truth], within: float) -> list[str]:
        deadline = time.monotonic() + within
        problems: list[str] = ["not checked"]
        while time.monotonic() < deadline:
            try:
                problems = mismatches(await asyncio.to_thread(self.shadows), truth)
            except OSError as e:
                problems = [repr(e)]
            if not problems:
                return []
            await asyncio.sleep(1.0)
        return problems


class ShadowEventReader:
    """Collects status's shadow events of this test's devices (a subscription made before they exist)."""

    def __init__(self, stack: Stack, subscription: str, prefix: str) -> None:
        self.client = pulsar.Client(stack.pulsar_url, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Warn))
        self.consumer = self.client.subscribe(
            topics.STATUS_SHADOW_EVENTS.name,
            subscription,
            consumer_type=pulsar.ConsumerType.Shared,
            initial_position=pulsar.InitialPosition.Latest,
        )
        self.prefix = prefix
        self.events: list[dict[str, Any]] = []

    def drain(self, quiet_ms: int = 3000) -> list[dict[str, Any]]:
        while True:
            try:
                msg = self.consumer.receive(timeout_millis=quiet_ms)
            except pulsar.Timeout:
                return self.events
            self.consumer.acknowledge(msg)
            event = orjson.loads(msg.data())
            if event["data"]["device_id"].startswith(self.prefix):
                self.events.append(event)

    def close(self) -> None:
        """Unsubscribes: the subscription is this test's alone, and left behind it keeps a backlog."""
        with contextlib.suppress(Exception):
            self.consumer.unsubscribe()
        self.client.close()


def fold_events(events: list[dict[str, Any]]) -> tuple[dict[str, dict[str, tuple[int, Any]]], list[str]]:
    """Device -> DP values rebuilt from its shadow events (deduplicated by id), and any id reused with
    different content (a duplicate must be the same event byte for byte)."""
    by_id: dict[str, dict[str, Any]] = {}
    conflicts: list[str] = []
    for e in events:
        seen = by_id.setdefault(e["id"], e)
        if seen["data"] != e["data"]:
            conflicts.append(e["id"])
    state: dict[str, dict[str, tuple[int, Any]]] = {}
    for e in sorted(by_id.values(), key=lambda e: (e["data"]["device_id"], e["data"]["shadow_version"])):
        dps = state.setdefault(e["data"]["device_id"], {})
        for change in e["data"]["changes"]:
            dps[change["code"]] = (change["new"]["device_time_ms"], change["new"]["value"])
    return state, conflicts
