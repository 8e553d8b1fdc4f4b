"""Traces across services on the real stack, read back through the trace viewer's API (Zipkin).

tuya-sim, ingest and status run as their console scripts, exporting to the Zipkin server of the stack
(`FLEET_ZIPKIN_ENDPOINT`, `FLEET_ZIPKIN_URL`: `devstack env` exports both). One device report goes
tuya-sim -> Tuya's topic -> ingest -> the device topic -> status: its trace must hold spans of every service
it crossed, tagged with the device id. One operator call (GET a shadow from status) must make a trace with the
HTTP server span and the database reads under it, found by the trace id it sent. No span of any service may
hold a Tuya token or the access secret.

One system serves the module (starting three services is most of the time); every name in it is this run's.

A service joining the device's path (pairing, unbinding, OTA) is one entry in `SERVICES`.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from fleet_contracts import topics
from fleet_shared.tracing import DEVICE_ID
from fleet_shared.tracing.zipkin import ZipkinQuery, service_of, services_in, span_tree
from fleet_shared.tuya.openapi import TOKEN_PATH, TuyaOpenApiClient
from tests.support import ServiceProcess, Stack, drop_subscription

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

API_KEY = "traces-e2e-key"
TRACE_WITHIN_S = 60.0


@dataclass(frozen=True)
class Names:
    """This run's names: Tuya project, databases, subscriptions."""

    unique: str
    access_id: str
    secret: str
    control_token: str


# Each service of the device report's path, in start order, with the settings that make it this run's.
SERVICES: dict[str, Callable[[Names, Mapping[str, str]], dict[str, str]]] = {
    "tuya-sim": lambda n, urls: {
        "FLEET_SIM_PROVISION": "true",
        "FLEET_SIM_CONTROL_TOKEN": n.control_token,
        "FLEET_SIM_DEVICES": "1",
        "FLEET_SIM_RATE_LIMIT_RPS": "0",
    },
    "ingest": lambda n, urls: {"FLEET_INGEST_DATABASE": f"traces_ingest_{n.unique}"},
    "status": lambda n, urls: {
        "FLEET_STATUS_DATABASE": f"traces_status_{n.unique}",
        "FLEET_STATUS_SUBSCRIPTION": f"traces-status-{n.unique}",
        "FLEET_STATUS_INITIAL_POSITION": "latest",
        "FLEET_STATUS_RECONCILE_INTERVAL_S": "0",
        "FLEET_TUYA_OPENAPI_URL": urls["tuya-sim"],  # DP schemas from the simulated cloud
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
    }
    started: dict[str, ServiceProcess] = {}
    urls: dict[str, str] = {}
    query = ZipkinQuery(url)
    started_at = time.time()
    try:
        for name, settings in SERVICES.items():
            process = ServiceProcess(name, log=logs / f"{name}.log", stack=stack, api_key=API_KEY)
            process.env.update({**common, **settings(names, urls)})
            process.start()
            started[name] = process
            await process.wait_ready()
            urls[name] = process.url
        yield System(names, started, query, started_at)
    finally:
        for process in reversed(started.values()):
            process.terminate()
        query.close()
        # status's durable subscription on the shared device topic would keep a backlog forever
        await asyncio.to_thread(
            drop_subscription, stack.pulsar_admin_url, topics.DEVICE_EVENTS.name, f"traces-status-{unique}"
        )


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
    return lambda: "\n".join(f"--- {n}\n{p.log_tail(1500)}" for n, p in system.services.items())


@dataclass(frozen=True)
class DeviceReport:
    device: str
    spans: list[dict[str, Any]]  # the trace that crossed every service


@pytest.fixture(scope="module")
async def device_report(system: System) -> DeviceReport:
    """One status report of one simulated device, and the first trace of it that reached every service."""
    with system.control() as control:
        seed = secrets.randbelow(1_000_000)  # device ids of their own: the viewer keeps earlier runs' traces
        fleet = control.post("/sim/fleet", json={"seed": seed, "devices": 2, "homes": 1, "online_ratio": 1.0})
        assert fleet.status_code == 200, fleet.text
        device = fleet.json()["bound_device_ids"][0]
        report = control.post("/sim/reports", json={"device_ids": [device], "max_dps": 2})
        assert report.status_code == 200, report.text
    tuya_topic = f"persistent://{system.names.access_id}/out/event"

    def crossing_trace() -> list[dict[str, Any]] | None:
        for spans in system.zipkin.traces(tag=(DEVICE_ID, device), lookback_ms=600_000, limit=50):
            ours = find_span(spans, **{"messaging.destination.name": tuya_topic}) is not None
            if ours and set(SERVICES) <= services_in(spans):
                return spans
        return None

    what = f"one trace of {device} through {list(SERVICES)}"
    return DeviceReport(device, await until_found(crossing_trace, what, logs_of(system)))


async def test_a_device_report_is_one_trace_across_every_service_it_crosses(
    device_report: DeviceReport,
) -> None:
    spans, device = device_report.spans, device_report.device
    # one tree: every span hangs off the simulator's publish (nothing orphaned on the way)
    roots = span_tree(spans)
    assert len(roots) == 1, [r.span["name"] for r in roots]
    assert service_of(roots[0].span) == "tuya-sim"
    consumed = [
        s
        for s in spans
        if service_of(s) == "status" and (s.get("tags") or {}).get("messaging.operation.type") == "process"
    ]
    assert consumed, "status's consume span is missing"
    tags = consumed[0]["tags"]
    assert tags["messaging.system"] == "pulsar"
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
        assert traces, f"no trace of {service} to check"
        text = orjson.dumps(traces).decode()
        leaked = [name for name, value in secrets_sent.items() if value in text]
        assert not leaked, f"{service}'s spans hold {leaked}"
