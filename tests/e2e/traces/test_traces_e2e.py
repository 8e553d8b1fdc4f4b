"""Traces across services on the real stack, read back through the trace viewer's API (Zipkin).

Every service (tuya-sim, ingest, status, pairing, unbinding, ota) runs as its console script, exporting to the
Zipkin server of the stack (`FLEET_ZIPKIN_ENDPOINT`, `FLEET_ZIPKIN_URL`: `devstack env` exports both).
- One device report goes tuya-sim -> Tuya's topic -> ingest -> the device topic -> status: its trace must hold
  spans of every service it crossed, tagged with the device id.
- One operator call (GET a shadow from status) makes a trace with the HTTP server span and the database reads
  under it, found by the trace id it sent.
- A pairing session: the operator's POST is one trace (pairing's server span, its database write, Tuya's
  token API in the simulator under pairing's client span); the device's activation is one trace from the
  simulator's push through ingest to pairing, which records the outcome (its sessions write) inside it.
- An unbinding batch: the operator's POST is one trace; each device's removal is one trace (unbinding's
  client span, Tuya's removal API in the simulator); the removal's push is one trace through ingest to the
  consumers of device events. `fleet trace` finds the device's and the batch's traces.
- No span of any service holds a Tuya token or the access secret, and every metric a rule or a dashboard
  reads is exported by one of these running services (or by the Pulsar broker, or is Prometheus's `up`).

One system serves the module (starting the services is most of the time); every name in it is this run's.
A service joining is one entry in `SERVICES`.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from motor.motor_asyncio import AsyncIOMotorClient
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from fleet_contracts import topics
from fleet_shared.tracing import BATCH_ID, DEVICE_ID, RELEASE_ID
from fleet_shared.tracing.zipkin import ZipkinQuery, service_of, services_in, span_tree, started_us
from fleet_shared.tuya.openapi import TOKEN_PATH, TuyaOpenApiClient
from tests.support import ServiceProcess, Stack, drop_subscription
from tests.unit.ops.queries import (
    PULSAR_BROKER_METRICS,
    SCRAPE_METRICS,
    dashboard_expressions,
    exported_names,
    metric_names,
    rule_expressions,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

API_KEY = "traces-e2e-key"
TRACE_WITHIN_S = 60.0
# six services start side by side on a shared 2-core machine: each imports its stack (~30 s at load 16)
READY_WITHIN_S = 180.0
PLUG = "sim0plug0cz00001"  # a simulated product: the module's devices
# the services a device report crosses, in order
DEVICE_REPORT_PATH = ("tuya-sim", "ingest", "status")
# the consumers of the device topic: their durable subscriptions are this run's, dropped at the end
DEVICE_CONSUMERS = ("status", "pairing", "ota")


@dataclass(frozen=True)
class Names:
    """This run's names: Tuya project, databases, subscriptions."""

    unique: str
    access_id: str
    secret: str
    control_token: str


# Each service, in start order, with the settings that make it this run's.
SERVICES: dict[str, Callable[[Names, Mapping[str, str]], dict[str, str]]] = {
    "tuya-sim": lambda n, urls: {
        "FLEET_SIM_PROVISION": "true",
        "FLEET_SIM_CONTROL_TOKEN": n.control_token,
        "FLEET_SIM_DEVICES": "1",
        "FLEET_SIM_RATE_LIMIT_RPS": "0",
    },
    "ingest": lambda n, urls: {
        "FLEET_INGEST_DATABASE": f"traces_ingest_{n.unique}",
        # one replica, no handover to guard: without the 2 s hold on a partition new to ingest, the
        # activation's push reaches pairing before pairing's poll of Tuya's token result records the device
        # (the outcome trace follows the push)
        "FLEET_INGEST_HANDOVER_HOLD_SECONDS": "0",
    },
    "status": lambda n, urls: {
        "FLEET_STATUS_DATABASE": f"traces_status_{n.unique}",
        "FLEET_STATUS_SUBSCRIPTION": f"traces-status-{n.unique}",
        "FLEET_STATUS_INITIAL_POSITION": "latest",
        "FLEET_STATUS_RECONCILE_INTERVAL_S": "0",
        "FLEET_TUYA_OPENAPI_URL": urls["tuya-sim"],  # DP schemas from the simulated cloud
    },
    "pairing": lambda n, urls: {
        "FLEET_PAIRING_DATABASE": f"traces_pairing_{n.unique}",
        "FLEET_PAIRING_SUBSCRIPTION": f"traces-pairing-{n.unique}",
        "FLEET_PAIRING_API_KEYS": f"e2e:{API_KEY}:operator",
        "FLEET_PAIRING_POLL_INTERVAL_S": "1",
        "FLEET_PAIRING_SETTLE_S": "1",
        "FLEET_TUYA_OPENAPI_URL": urls["tuya-sim"],
    },
    "unbinding": lambda n, urls: {
        "FLEET_UNBINDING_DATABASE": f"traces_unbinding_{n.unique}",
        "FLEET_UNBINDING_API_KEYS": f"e2e:{API_KEY}:admin",
        "FLEET_UNBINDING_OUTBOX_RELAY_INTERVAL_S": "0.5",
        "FLEET_UNBINDING_RESUME_INTERVAL_S": "1",
        "FLEET_TUYA_OPENAPI_URL": urls["tuya-sim"],
    },
    "ota": lambda n, urls: {
        "FLEET_OTA_DATABASE": f"traces_ota_{n.unique}",
        "FLEET_OTA_SUBSCRIPTION": f"traces-ota-{n.unique}",
        "FLEET_TUYA_OPENAPI_URL": urls["tuya-sim"],
    },
}


@dataclass
class System:
    names: Names
    services: dict[str, ServiceProcess]
    zipkin: ZipkinQuery
    started_at: float  # epoch seconds: how far back this run's spans go

    @property
    def sim(self) -> ServiceProcess:
        return self.services["tuya-sim"]

    @property
    def status(self) -> ServiceProcess:
        return self.services["status"]

    def api(self, service: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.services[service].url,
            headers={"Authorization": f"Bearer {API_KEY}"},
            timeout=30,
        )

    def control(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.sim.url,
            headers={"Authorization": f"Bearer {self.names.control_token}"},
            timeout=30,
        )


@pytest.fixture(scope="module")
def zipkin() -> tuple[str, str]:
    """The viewer's spans endpoint and API URL; the test fails loudly without them."""
    endpoint, url = os.environ.get("FLEET_ZIPKIN_ENDPOINT"), os.environ.get("FLEET_ZIPKIN_URL")
    if not endpoint or not url:
        pytest.fail(
            "FLEET_ZIPKIN_ENDPOINT / FLEET_ZIPKIN_URL not set: run with `just test`, or "
            'eval "$(devstack env)" on a stack started with `./dev up`',
            pytrace=False,
        )
    return endpoint, url


@pytest.fixture(scope="module")
async def system(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory, zipkin: tuple[str, str]
) -> AsyncIterator[System]:
    endpoint, url = zipkin
    unique = uuid.uuid4().hex[:10]
    logs = tmp_path_factory.mktemp("traces")
    names = Names(unique, f"trc{unique}", secrets.token_hex(16), secrets.token_hex(12))
    common = {
        "FLEET_TUYA_ACCESS_ID": names.access_id,
        "FLEET_TUYA_ACCESS_SECRET": names.secret,
        "FLEET_ZIPKIN_ENDPOINT": endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "200",  # export spans within a fraction of a second
        # every action leaves its trace (the default samples a ratio of them)
        "OTEL_TRACES_SAMPLER": "always_on",
    }
    started: dict[str, ServiceProcess] = {}
    urls: dict[str, str] = {}
    query = ZipkinQuery(url, timeout=60.0)  # a loaded viewer (2 shared cores) answers slowly
    started_at = time.time()
    try:
        # the simulator first (the others call its OpenAPI), then the rest side by side
        first, *rest = SERVICES
        for group in ([first], rest):
            for name in group:
                process = ServiceProcess(name, log=logs / f"{name}.log", stack=stack, api_key=API_KEY)
                process.env.update({**common, **SERVICES[name](names, urls)})
                process.start()
                started[name] = process
            for name in group:
                await started[name].wait_ready(within=READY_WITHIN_S)
                urls[name] = started[name].url
        yield System(names, started, query, started_at)
    finally:
        for process in reversed(started.values()):
            process.terminate()
        query.close()
        await drop_databases(stack, unique)
        # the durable subscriptions on the shared device topic would keep a backlog forever
        for consumer in DEVICE_CONSUMERS:
            await asyncio.to_thread(
                drop_subscription,
                stack.pulsar_admin_url,
                topics.DEVICE_EVENTS.name,
                f"traces-{consumer}-{unique}",
            )


async def drop_databases(stack: Stack, unique: str) -> None:
    """This run's databases (named `traces_<service>_<unique>`) on the shared server."""
    client: AsyncIOMotorClient[Any] = AsyncIOMotorClient(stack.mongodb_uri)
    try:
        for name in await client.list_database_names():
            if name.startswith("traces_") and name.endswith(f"_{unique}"):
                await client.drop_database(name)
    finally:
        client.close()


async def until_found(
    find: Callable[[], Any], what: str, logs: Callable[[], str], within: float = TRACE_WITHIN_S
) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        found = await asyncio.to_thread(find)
        if found:
            return found
        await asyncio.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}\n{logs()}")


def find_span(spans: list[dict[str, Any]], **tags: str) -> dict[str, Any] | None:
    return next((s for s in spans if all((s.get("tags") or {}).get(k) == v for k, v in tags.items())), None)


def logs_of(system: System) -> Callable[[], str]:
    """What a failed wait prints: whether the viewer may have evicted this run's spans, then every log."""
    return lambda: "\n".join(
        [eviction_note(system), *(f"--- {n}\n{p.log_tail(1500)}" for n, p in system.services.items())]
    )


def eviction_note(system: System) -> str:
    """Whether a span not found may have been evicted. The viewer keeps spans in memory up to a bound
    (`FLEET_STACK_ZIPKIN_MAX_SPANS`) and then drops whole traces, oldest first: it no longer lists them, and
    a wait for one times out as if it had never been exported. While it still holds a trace that began before
    this run, nothing of this run was dropped."""
    started_ms = int(system.started_at * 1000)
    try:
        older = httpx.get(
            f"{system.zipkin.base_url}/api/v2/traces",
            params={"endTs": started_ms, "lookback": 7 * 86_400_000, "limit": 1},
            timeout=30,
        ).json()
    except (httpx.HTTPError, ValueError) as e:
        return f"(could not ask the viewer whether it evicted spans: {type(e).__name__})"
    if older:
        return "the viewer still holds traces from before this run: none of this run's spans was evicted"
    return (
        "EVICTED? the viewer holds no trace that began before this run: it may have dropped this run's "
        "oldest spans (its in-memory storage keeps FLEET_STACK_ZIPKIN_MAX_SPANS spans, and other runs on the "
        "shared stack add theirs), or it started with this run. Rerun, or give the stack a larger "
        "FLEET_STACK_ZIPKIN_MAX_SPANS and FLEET_STACK_ZIPKIN_HEAP (README, 'Observe')."
    )


@dataclass(frozen=True)
class DeviceReport:
    device: str
    spans: list[dict[str, Any]]  # the trace that crossed every service


@dataclass(frozen=True)
class Fleet:
    """The module's simulated devices: bound ones (reports, unbinding) and factory-fresh ones (pairing)."""

    bound: list[str]
    free: list[str]
    homes: list[dict[str, Any]]


@pytest.fixture(scope="module")
async def fleet(system: System) -> Fleet:
    with system.control() as control:
        seed = secrets.randbelow(1_000_000)  # device ids of their own: the viewer keeps earlier runs' traces
        body = {
            "seed": seed,
            "devices": 3,
            "homes": 2,
            "unbound": 2,
            "product_ids": [PLUG],
            "online_ratio": 1.0,
        }
        created = control.post("/sim/fleet", json=body)
        assert created.status_code == 200, created.text
        truth = control.get("/sim/truth", params={"messages": "false"})
        assert truth.status_code == 200, truth.text
    devices = truth.json()["fleet"]["devices"]
    free = [d for d, t in devices.items() if not t["bound"]]
    return Fleet(created.json()["bound_device_ids"], free, truth.json()["fleet"]["homes"])


@pytest.fixture(scope="module")
async def device_report(system: System, fleet: Fleet) -> DeviceReport:
    """One status report of one simulated device, and the first trace of it that reached every service."""
    device = fleet.bound[0]
    with system.control() as control:
        report = control.post("/sim/reports", json={"device_ids": [device], "max_dps": 2})
        assert report.status_code == 200, report.text
    tuya_topic = f"persistent://{system.names.access_id}/out/event"

    def crossing_trace() -> list[dict[str, Any]] | None:
        for spans in system.zipkin.traces(tag=(DEVICE_ID, device), lookback_ms=600_000, limit=50):
            ours = find_span(spans, **{"messaging.destination.name": tuya_topic}) is not None
            # every span exported: status's flush span (the parent of its reads) ends last
            whole = len(span_tree(spans)) == 1
            if ours and whole and set(DEVICE_REPORT_PATH) <= services_in(spans):
                return spans
        return None

    what = f"one trace of {device} through {list(DEVICE_REPORT_PATH)}"
    return DeviceReport(device, await until_found(crossing_trace, what, logs_of(system)))


async def test_a_device_report_is_one_trace_across_every_service_it_crosses(
    device_report: DeviceReport,
) -> None:
    spans, device = device_report.spans, device_report.device
    # one tree: every span hangs off the simulator's publish (nothing orphaned on the way)
    roots = span_tree(spans)
    assert len(roots) == 1, [r.span["name"] for r in roots]
    assert service_of(roots[0].span) == "tuya-sim"
    # the simulator's send starts the trace: `send {topic}`, a PRODUCER span (Zipkin lower-cases names)
    assert roots[0].span["name"].startswith("send persistent://"), roots[0].span["name"]
    assert roots[0].span["kind"] == "PRODUCER"
    consumed = [
        s
        for s in spans
        if service_of(s) == "status" and (s.get("tags") or {}).get("messaging.operation.type") == "process"
    ]
    assert consumed, "status's consume span is missing"
    tags = consumed[0]["tags"]
    # named and tagged per OpenTelemetry's messaging conventions
    assert consumed[0]["name"] == f"process {topics.DEVICE_EVENTS.name}".lower()
    assert consumed[0]["kind"] == "CONSUMER"
    assert tags["messaging.system"] == "pulsar"
    assert tags["messaging.operation.name"] == "process"
    assert tags["messaging.consumer.group.name"]
    assert tags[DEVICE_ID] == device
    assert tags["messaging.message.id"]


def traceparent() -> tuple[str, str, str]:
    """A caller's trace context that no exporter ever sees: (trace id, span id, `traceparent` header)."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-01"


SHADOW_ROUTE = "/v1/devices/{device_id}/shadow"


async def test_an_operator_call_traces_the_http_request_and_its_database_reads(system: System) -> None:
    """Found by the trace id the caller sent: the server span is the caller's child, and every span of the
    request (the API key's lookup, the shadow's read) hangs off it."""
    device = f"missing-{system.names.unique}"  # unique: the viewer keeps earlier runs
    trace_id, caller_span, header = traceparent()
    async with httpx.AsyncClient(base_url=system.status.url, timeout=10) as http:
        response = await http.get(
            f"/v1/devices/{device}/shadow",
            headers={"Authorization": f"Bearer {API_KEY}", "traceparent": header},
        )
    assert response.status_code == 404, response.text
    database = f"traces_status_{system.names.unique}"
    shadows = {"db.system": "mongodb", "db.namespace": database, "db.collection.name": "shadows"}

    def request_trace() -> list[dict[str, Any]] | None:
        spans = system.zipkin.trace(trace_id)
        server = find_span(spans, **{"http.route": SHADOW_ROUTE, "http.request.method": "GET"})
        return spans if server is not None and find_span(spans, **shadows) is not None else None

    spans = await until_found(request_trace, "the GET's trace", logs_of(system))
    # one server span: no second HTTP layer (FastAPI's own telemetry) beside the kit's
    (server,) = [s for s in spans if s.get("kind") == "SERVER"]
    assert server["tags"]["http.route"] == SHADOW_ROUTE
    assert server["name"].lower() == f"get {SHADOW_ROUTE}"  # Zipkin lower-cases span names
    assert server.get("parentId") == caller_span, "the request continues the caller's trace"
    assert server["tags"]["http.response.status_code"] == "404"
    assert server["tags"][DEVICE_ID] == device
    assert "url.path" not in server["tags"]
    read = find_span(spans, **shadows)
    assert read is not None
    assert read["kind"] == "CLIENT"
    assert read["tags"]["db.operation.name"] in ("find", "aggregate")
    # status's first authenticated call in this module: its key is not cached yet, so it is looked up
    lookup = find_span(spans, **{"db.namespace": database, "db.collection.name": "api_keys"})
    assert lookup is not None, [s["name"] for s in spans]
    # one tree under the server span (its own parent is the caller's, never exported): nothing hangs elsewhere
    roots = span_tree(spans)
    assert [r.span["id"] for r in roots] == [server["id"]], [(s["name"], s.get("parentId")) for s in spans]
    assert {read["id"], lookup["id"]} <= {node.span["id"] for node in roots[0].walk()}
    assert {service_of(s) for s in spans} == {"status"}


async def test_the_device_reports_trace_holds_its_shadow_write(
    system: System, device_report: DeviceReport
) -> None:
    """status writes many messages in one flush: the report's own trace gets a `status shadow write` span
    under status's consume span once its shadow is durable, naming the trace of the flush that wrote it, and
    that trace holds the flush span with the database write of `shadows` under it."""
    database = f"traces_status_{system.names.unique}"
    trace_id = device_report.spans[0]["traceId"]

    def written() -> dict[str, Any] | None:
        spans = system.zipkin.trace(trace_id)
        return next((s for s in spans if s.get("name") == "status shadow write"), None)

    write = await until_found(written, "the shadow write in the device report's trace", logs_of(system))
    assert service_of(write) == "status"
    assert write["tags"][DEVICE_ID] == device_report.device
    assert write["tags"]["status.shadow.changed"] == "true"
    assert int(write["tags"]["status.shadow.version"]) >= 1
    consume = {
        s["id"]: s
        for s in system.zipkin.trace(trace_id)
        if service_of(s) == "status" and (s.get("tags") or {}).get("messaging.operation.type") == "process"
    }
    assert write.get("parentId") in consume, "the write is not under status's consume span"

    flush_trace = write["tags"]["status.flush.trace_id"]
    shadows = {"db.namespace": database, "db.collection.name": "shadows"}

    def flush_write() -> tuple[dict[str, Any], dict[str, Any]] | None:
        spans = system.zipkin.trace(flush_trace)
        flush = next((s for s in spans if s.get("name") == "status flush"), None)
        writes = (find_span(spans, **shadows, **{"db.operation.name": op}) for op in ("insert", "update"))
        db = next((s for s in writes if s), None)
        return (flush, db) if flush and db else None

    flush, db = await until_found(flush_write, "the flush's database write", logs_of(system), within=10)
    assert db["parentId"] == flush["id"], "the shadow write is not under the flush span"


async def test_no_exported_span_holds_a_tuya_token_or_the_access_secret(
    system: System, device_report: DeviceReport
) -> None:
    """Tokens travel in headers, bodies and one path (`/v1.0/token/{refresh_token}`): after a token is
    acquired, refreshed and used against the simulated cloud, no span of any service holds one, nor the
    project's access secret, anywhere in its JSON."""
    tokens: list[str] = []

    async def keep_tokens(response: httpx.Response) -> None:
        if response.url.path.startswith(TOKEN_PATH):
            await response.aread()
            result = response.json().get("result") or {}
            tokens.extend(str(result[k]) for k in ("access_token", "refresh_token") if result.get(k))

    trace_id, span_id, _ = traceparent()
    context = SpanContext(int(trace_id, 16), int(span_id, 16), is_remote=False, trace_flags=TraceFlags(1))
    async with (
        httpx.AsyncClient(timeout=10, event_hooks={"response": [keep_tokens]}) as http,
        TuyaOpenApiClient(
            system.names.access_id,
            system.names.secret,
            base_url=system.sim.url,
            http=http,
            refresh_margin=10**9,  # every use refreshes first: the refresh token goes in a path each time
            default_rate_limit=None,
        ) as cloud,
    ):
        with trace.use_span(NonRecordingSpan(context)):  # `traceparent` on each call: one trace to find
            await cloud.access_token()  # acquired
            await cloud.access_token()  # refreshed
            device = await cloud.request(
                "GET", "/v1.0/devices/{device_id}", path_params={"device_id": device_report.device}
            )  # refreshed again, then used
    assert device["id"] == device_report.device
    assert len(tokens) == 6, "the token was not acquired and refreshed twice"

    def refresh_span() -> dict[str, Any] | None:
        return find_span(system.zipkin.trace(trace_id), **{"http.route": "/v1.0/token/{refresh_token}"})

    # the refresh's own span is exported: the scan below reads what the services sent
    await until_found(refresh_span, "tuya-sim's span of the token refresh", logs_of(system))
    lookback_ms = int((time.time() - system.started_at) * 1000) + 60_000
    secrets_sent = {"access secret": system.names.secret, **{f"token {i}": t for i, t in enumerate(tokens)}}
    for service in SERVICES:
        traces = system.zipkin.traces(service=service, lookback_ms=lookback_ms, limit=10_000)
        # unbinding has acted on nothing yet (its batch's spans are checked in its own test)
        assert traces or service == "unbinding", f"no trace of {service} to check"
        text = orjson.dumps(traces).decode()
        leaked = [name for name, value in secrets_sent.items() if value in text]
        assert not leaked, f"{service}'s spans hold {leaked}"


def children_of(spans: list[dict[str, Any]], parent: dict[str, Any]) -> list[dict[str, Any]]:
    """Every span under `parent` in its trace (children, their children, ...)."""
    for root in span_tree(spans):
        for node in root.walk():
            if node.span["id"] == parent["id"]:
                return [n.span for n in node.walk()][1:]
    return []


def fleet_trace(system: System, entity_id: str) -> list[list[dict[str, Any]]]:
    """`fleet trace ID --json`: the traces the operator's CLI finds for a device, batch or release id."""
    traces = fleet_trace_or_none(system, entity_id)
    assert traces is not None, f"`fleet trace {entity_id}` found nothing"
    return traces


def fleet_trace_or_none(system: System, entity_id: str) -> list[list[dict[str, Any]]] | None:
    """`fleet trace ID --json`, or None when it finds nothing (its exit code 1)."""
    cli = str(Path(sys.executable).with_name("fleet"))
    zipkin = os.environ["FLEET_ZIPKIN_URL"]
    result = subprocess.run(
        [cli, "trace", entity_id, "--zipkin", zipkin, "--lookback", "15m", "--limit", "20", "--json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=180,  # a loaded shared viewer answers slowly
    )
    if result.returncode == 1 and "no traces of" in result.stderr:
        return None
    assert result.returncode == 0, result.stdout + result.stderr
    traces: list[list[dict[str, Any]]] = orjson.loads(result.stdout)
    return traces


# MongoDB's write commands (`db.operation.name`): a span of one of these changed the collection
WRITES = ("insert", "update", "findAndModify", "delete")


def write_span(spans: list[dict[str, Any]], database: str, collection: str) -> dict[str, Any] | None:
    return next(
        (
            s
            for s in spans
            if (s.get("tags") or {}).get("db.namespace") == database
            and s["tags"].get("db.collection.name") == collection
            and s["tags"].get("db.operation.name") in WRITES
        ),
        None,
    )


def consume_span(spans: list[dict[str, Any]], service: str) -> dict[str, Any] | None:
    return next(
        (
            s
            for s in spans
            if service_of(s) == service and (s.get("tags") or {}).get("messaging.operation.type") == "process"
        ),
        None,
    )


@dataclass(frozen=True)
class PairingRun:
    device: str
    session_id: str
    database: str
    operator_trace: list[dict[str, Any]]
    caller_span: str


@pytest.fixture(scope="module")
async def pairing_run(system: System, fleet: Fleet) -> PairingRun:
    """An operator opens an EZ pairing session (with a trace context of its own); once Tuya's token API has
    answered, one factory-fresh device activates with the token and the session succeeds."""
    home, device = fleet.homes[0], fleet.free[0]
    trace_id, caller_span, header = traceparent()
    body = {
        "owner_uid": home["owner_uid"],
        "home_id": home["home_id"],
        "mode": "EZ",
        "time_zone_id": "Europe/Berlin",
    }
    async with system.api("pairing") as api:
        opened = await api.post("/v1/pairing-sessions", json=body, headers={"traceparent": header})
        assert opened.status_code == 201, opened.text
        session_id, assembled = opened.json()["session"]["session_id"], opened.json()["assembled_token"]
        with system.control() as control:
            activated = control.post(
                "/sim/pairing/activate", json={"token": assembled, "device_ids": [device]}
            )
            assert activated.status_code == 200, activated.text

        async def succeeded() -> bool:
            view = await api.get(f"/v1/pairing-sessions/{session_id}")
            return view.status_code == 200 and view.json()["state"] == "succeeded"

        deadline = time.monotonic() + TRACE_WITHIN_S
        while not await succeeded():
            assert time.monotonic() < deadline, f"session {session_id} did not succeed\n{logs_of(system)()}"
            await asyncio.sleep(0.5)

    database = f"traces_pairing_{system.names.unique}"

    def operator_trace() -> list[dict[str, Any]] | None:
        spans = system.zipkin.trace(trace_id)
        server = find_span(spans, **{"http.route": "/v1/pairing-sessions"})
        token_api = find_span(spans, **{"http.route": "/v1.0/device/paring/token"})
        written = write_span(spans, database, "sessions")
        return spans if server and token_api and written else None

    spans = await until_found(operator_trace, "the pairing POST's trace", logs_of(system))
    return PairingRun(device, session_id, database, spans, caller_span)


async def test_opening_a_pairing_session_is_one_trace_through_tuyas_token_api(
    pairing_run: PairingRun,
) -> None:
    """pairing's server span continues the operator's trace; its database write and its call of Tuya's token
    API hang under it, and the simulated cloud's server span under that call."""
    spans = pairing_run.operator_trace
    (server,) = [s for s in spans if s.get("kind") == "SERVER" and service_of(s) == "pairing"]
    assert server["name"].lower() == "post /v1/pairing-sessions"
    assert server["tags"]["http.route"] == "/v1/pairing-sessions"
    assert server["tags"]["http.response.status_code"] == "201"
    assert server.get("parentId") == pairing_run.caller_span
    under = children_of(spans, server)
    write = write_span(under, pairing_run.database, "sessions")
    assert write is not None, [s["name"] for s in under]
    assert write["kind"] == "CLIENT"
    assert write["tags"]["db.system"] == "mongodb"
    call = next(s for s in under if s.get("kind") == "CLIENT" and service_of(s) == "pairing" and
                (s.get("tags") or {}).get("url.template") == "/v1.0/device/paring/token")  # fmt: skip
    assert call["name"].lower() == "post /v1.0/device/paring/token"
    sim = find_span(children_of(spans, call), **{"http.route": "/v1.0/device/paring/token"})
    assert sim is not None
    assert service_of(sim) == "tuya-sim"
    assert sim["kind"] == "SERVER"
    assert services_in(spans) == {"pairing", "tuya-sim"}
    assert [r.span["id"] for r in span_tree(spans)] == [server["id"]]


async def test_a_pairing_outcome_is_one_trace_from_the_devices_push_to_pairings_record(
    system: System, pairing_run: PairingRun
) -> None:
    """The device's activation reaches pairing as Tuya's push: one trace holds the simulator's publish,
    ingest, and pairing's consume span with the sessions write that records the device as paired."""

    def outcome_trace() -> list[dict[str, Any]] | None:
        for spans in system.zipkin.traces(tag=(DEVICE_ID, pairing_run.device), lookback_ms=600_000, limit=50):
            consumed = consume_span(spans, "pairing")
            if consumed is None or not {"tuya-sim", "ingest"} <= services_in(spans):
                continue
            if write_span(children_of(spans, consumed), pairing_run.database, "sessions") is not None:
                return spans
        return None

    spans = await until_found(outcome_trace, "the activation's trace with pairing's record", logs_of(system))
    roots = span_tree(spans)
    assert len(roots) == 1, [r.span["name"] for r in roots]
    assert service_of(roots[0].span) == "tuya-sim"
    consumed = consume_span(spans, "pairing")
    assert consumed is not None
    tags = consumed["tags"]
    assert tags["messaging.system"] == "pulsar"
    assert tags["messaging.destination.name"].startswith(topics.DEVICE_EVENTS.name)
    assert tags[DEVICE_ID] == pairing_run.device
    assert tags["messaging.message.id"]
    # the CLI finds the device's traces, this one among them
    found = fleet_trace(system, pairing_run.device)
    assert spans[0]["traceId"] in {t[0]["traceId"] for t in found}


@dataclass(frozen=True)
class UnbindingRun:
    device: str
    batch_id: str
    operator_trace: list[dict[str, Any]]


@pytest.fixture(scope="module")
async def unbinding_run(system: System, fleet: Fleet) -> UnbindingRun:
    """The operator (an administrator) authorizes itself for the product, then submits a batch of one bound
    device with a trace context of its own; the batch finishes with the device unbound."""
    device = fleet.bound[1]
    trace_id, _, header = traceparent()
    async with system.api("unbinding") as api:
        registered = await api.post(
            f"/v1/products/{PLUG}/authorizations/register", json={"owner": "e2e", "original_owner": None}
        )
        assert registered.status_code == 201, registered.text
        created = await api.post(
            "/v1/batches",
            json={"device_ids": [device], "reason": "traces e2e"},
            headers={"traceparent": header},
        )
        assert created.status_code == 201, created.text
        batch_id = created.json()["batch_id"]
        deadline = time.monotonic() + TRACE_WITHIN_S
        while True:
            batch = (await api.get(f"/v1/batches/{batch_id}")).json()
            if batch["status"] == "finished":
                break
            assert time.monotonic() < deadline, f"batch {batch_id} did not finish: {batch}"
            await asyncio.sleep(0.5)
        results = (await api.get(f"/v1/batches/{batch_id}/results")).json()
        assert [(r["device_id"], r["result"]) for r in results] == [(device, "unbound")], results

    database = f"traces_unbinding_{system.names.unique}"

    def operator_trace() -> list[dict[str, Any]] | None:
        spans = system.zipkin.trace(trace_id)
        server = find_span(spans, **{"http.route": "/v1/batches"})
        return spans if server and write_span(spans, database, "batches") else None

    spans = await until_found(operator_trace, "the batch POST's trace", logs_of(system))
    return UnbindingRun(device, batch_id, spans)


async def test_submitting_an_unbinding_batch_is_one_trace_with_its_database_writes(
    system: System, unbinding_run: UnbindingRun
) -> None:
    spans = unbinding_run.operator_trace
    # the batch's removal calls join this trace too (tuya-sim's server spans); the request's is unbinding's
    (server,) = [s for s in spans if s.get("kind") == "SERVER" and service_of(s) == "unbinding"]
    assert server["name"].lower() == "post /v1/batches"
    assert server["tags"]["http.response.status_code"] == "201"
    database = f"traces_unbinding_{system.names.unique}"
    assert write_span(children_of(spans, server), database, "batches") is not None, [s["name"] for s in spans]


async def test_an_unbinding_batchs_removal_and_its_push_are_traced_to_every_consumer(
    system: System, unbinding_run: UnbindingRun
) -> None:
    """The removal call is one trace (unbinding's client span, the simulated cloud's server span under it);
    the push that answers it is one trace from the simulator through ingest to the device topic's
    consumers."""
    device = unbinding_run.device

    def removal() -> list[dict[str, Any]] | None:
        for spans in system.zipkin.traces(tag=(DEVICE_ID, device), service="unbinding", lookback_ms=600_000):
            calls = [s for s in spans if s.get("kind") == "CLIENT" and service_of(s) == "unbinding"
                     and s["name"].startswith("delete ")]  # fmt: skip
            if calls and any(service_of(c) == "tuya-sim" for c in children_of(spans, calls[0])):
                return spans
        return None

    spans = await until_found(removal, "the removal call's trace", logs_of(system))
    assert services_in(spans) == {"unbinding", "tuya-sim"}
    removed_at = started_us(spans)

    def pushed() -> list[dict[str, Any]] | None:
        for spans in system.zipkin.traces(tag=(DEVICE_ID, device), lookback_ms=600_000, limit=50):
            later = started_us(spans) >= removed_at  # the device's earlier pushes are not the answer
            if later and {"tuya-sim", "ingest", *DEVICE_CONSUMERS} <= services_in(spans):
                return spans
        return None

    pushed_spans = await until_found(pushed, "the removal push's trace to every consumer", logs_of(system))
    # neither trace holds the project's access secret (the unbinding service signs every call with it)
    for trace_spans in (spans, pushed_spans, unbinding_run.operator_trace):
        assert system.names.secret not in orjson.dumps(trace_spans).decode()
    spans = pushed_spans
    assert len(span_tree(spans)) == 1
    for consumer in DEVICE_CONSUMERS:
        consumed = consume_span(spans, consumer)
        assert consumed is not None, consumer
        assert consumed["tags"][DEVICE_ID] == device
    # `fleet trace` finds the device's removal, and the batch by its id (the operator's reads of it)
    assert {"unbinding", "tuya-sim"} <= {service_of(s) for t in fleet_trace(system, device) for s in t}
    by_batch = fleet_trace(system, unbinding_run.batch_id)
    assert any(find_span(t, **{BATCH_ID: unbinding_run.batch_id}) for t in by_batch)


async def test_an_unbinding_batchs_work_is_found_by_its_batch_id(
    system: System, unbinding_run: UnbindingRun
) -> None:
    """`fleet trace BATCH_ID` shows the batch's work: the removal of each of its devices."""
    by_batch = fleet_trace(system, unbinding_run.batch_id)
    removals = [s for t in by_batch for s in t if service_of(s) == "tuya-sim"
                and (s.get("tags") or {}).get(DEVICE_ID) == unbinding_run.device]  # fmt: skip
    assert removals


async def test_fleet_trace_finds_a_release_by_its_id(system: System) -> None:
    """An operator's read of a release (here one that does not exist) is found by the release id."""
    release = f"rel-{system.names.unique}"
    async with system.api("ota") as api:
        response = await api.get(f"/v1/releases/{release}")
    assert response.status_code == 404, response.text

    def exported() -> list[list[dict[str, Any]]] | None:
        return system.zipkin.traces(tag=(RELEASE_ID, release), lookback_ms=600_000) or None

    # the viewer has the request's trace (the CLI starts slowly: asked once, when there is something to find)
    await until_found(exported, f"the trace of GET /v1/releases/{release}", logs_of(system))
    traces = fleet_trace(system, release)
    (server,) = [s for t in traces for s in t if s.get("kind") == "SERVER"]
    assert service_of(server) == "ota"
    assert server["tags"][RELEASE_ID] == release
    assert server["tags"]["http.route"] == "/v1/releases/{release_id}"


async def test_every_metric_a_rule_or_dashboard_reads_is_exported_by_a_running_service(
    system: System, stack: Stack, pairing_run: PairingRun, unbinding_run: UnbindingRun
) -> None:
    """Scraped from the services of this module (after a pairing session and an unbinding batch ran) and from
    the Pulsar broker: every name the alert rules and the Grafana dashboards read is served by one of them."""
    exported: dict[str, set[str]] = {}
    async with httpx.AsyncClient(timeout=10) as http:
        for name, process in system.services.items():
            response = await http.get(f"{process.url}/metrics")
            assert response.status_code == 200, name
            exported[name] = exported_names(response.text)
        broker = await http.get(f"{stack.pulsar_admin_url}/metrics/")
        assert broker.status_code == 200
        exported["pulsar"] = exported_names(broker.text)
    served = set().union(*exported.values()) | SCRAPE_METRICS
    used = {n for _, expr in [*rule_expressions(), *dashboard_expressions()] for n in metric_names(expr)}
    missing = sorted(used - served)
    assert not missing, f"read by a rule or a dashboard but exported by no running service: {missing}"
    # each service serves the RED metrics of its HTTP API; the domain services their own metrics
    for name in SERVICES:
        assert "fleet_http_requests_total" in exported[name], name
    assert "fleet_pairing_device_outcomes_total" in exported["pairing"]
    assert {"fleet_unbinding_device_results_total", "fleet_unbinding_quota_used"} <= exported["unbinding"]
    assert "fleet_ota_device_upgrades_total" in exported["ota"]
    assert exported["pulsar"] >= PULSAR_BROKER_METRICS
