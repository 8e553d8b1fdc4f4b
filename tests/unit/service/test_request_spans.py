"""The HTTP server span: named by the route's template, never by the path (a path can carry a credential:
Tuya's `/v1.0/token/{refresh_token}`, served by tuya-sim), and the parent of everything the request runs, its
dependencies' database commands included, whether or not the caller sent a trace context."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from fastapi import APIRouter, Depends
from fastapi.testclient import TestClient
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry
from pymongo import monitoring

from fleet_shared.service import build_app, requests
from fleet_shared.tracing import DEVICE_ID, CommandTracer
from fleet_tuya_sim.adapters.sinks import MemorySink
from fleet_tuya_sim.bootstrap import bootstrap
from fleet_tuya_sim.entrypoints.app import create_app
from tests.unit.service.test_service_app import Lifecycle, routes
from tests.unit.tuya_sim.conftest import ACCESS_SECRET, Api, FakeClock, settings

pytestmark = pytest.mark.unit


@dataclass(frozen=True)
class Traced:
    provider: TracerProvider
    exporter: InMemorySpanExporter

    def spans(self) -> tuple[ReadableSpan, ...]:
        return self.exporter.get_finished_spans()


@pytest.fixture
def traced(monkeypatch: pytest.MonkeyPatch) -> Traced:
    """Spans of every app built in the test, in memory: the kit's, and any a library makes with the global
    provider (FastAPI's own telemetry switches itself on when it finds one)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(requests, "_tracer", provider.get_tracer("fleet_shared.service"))
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
    return Traced(provider, exporter)


def as_json(span: ReadableSpan) -> str:
    """Everything a span exports: name, attributes, events, links, status."""
    return span.to_json(indent=None)


def test_a_span_names_the_route_template_and_records_no_path_parameter_but_the_ids(traced: Traced) -> None:
    device, other = "rt-" + secrets.token_hex(8), "rt-" + secrets.token_hex(8)
    app = build_app("test", Lifecycle(), routers=[routes()], registry=CollectorRegistry())
    with TestClient(app) as http:
        assert http.get(f"/v1/devices/{device}").status_code == 200
        assert http.get(f"/v2/unknown/{other}").status_code == 404
    found, unmatched = traced.spans()
    assert found.name == "GET /v1/devices/{device_id}"
    assert found.kind is SpanKind.SERVER
    attributes = dict(found.attributes or {})
    assert attributes.pop("http.route") == "/v1/devices/{device_id}"
    assert attributes.pop(DEVICE_ID) == device  # `fleet trace DEVICE_ID` finds the call
    assert attributes == {
        "http.request.method": "GET",
        "url.scheme": "http",
        "http.response.status_code": 200,
    }
    # no route: the method alone names it (OpenTelemetry's HTTP conventions), and nothing of the path is kept
    assert unmatched.name == "GET"
    assert dict(unmatched.attributes or {}) == {
        "http.request.method": "GET",
        "url.scheme": "http",
        "http.response.status_code": 404,
    }
    assert other not in as_json(unmatched)


@pytest.fixture
def sim() -> Iterator[Api]:
    clock = FakeClock()
    app = create_app(bootstrap(settings(), sink=MemorySink(), clock=clock), registry=CollectorRegistry())
    with TestClient(app) as client:
        yield Api(client, clock)


def test_tuya_sims_token_routes_leave_no_token_and_no_secret_in_any_span(sim: Api, traced: Traced) -> None:
    granted = sim.connect()["result"]
    refreshed = sim.call("GET", f"/v1.0/token/{granted['refresh_token']}", token="")
    assert refreshed["success"], refreshed
    sim.token = refreshed["result"]["access_token"]
    device = sim.client.get("/sim/fleet").json()["bound_device_ids"][0]
    assert sim.call("GET", f"/v1.0/devices/{device}")["success"]

    spans = traced.spans()
    served = {(s.attributes or {}).get("http.route") for s in spans}
    assert {"/v1.0/token", "/v1.0/token/{refresh_token}", "/v1.0/devices/{device_id}"} <= served
    credentials = [
        granted["access_token"],
        granted["refresh_token"],
        refreshed["result"]["access_token"],
        refreshed["result"]["refresh_token"],
        ACCESS_SECRET,
    ]
    for span in spans:
        text = as_json(span)
        assert not [c for c in credentials if c in text], span.name


# -- parenting ---------------------------------------------------------------------------------------------


def command(collection: str, request_id: int) -> tuple[Any, Any]:
    """A find's started and succeeded events, as pymongo's command monitoring reports them."""
    address = ("127.0.0.1", 27017)
    started = monitoring.CommandStartedEvent({"find": collection}, "svc", request_id, address, 1)
    succeeded = monitoring.CommandSucceededEvent(
        timedelta(0), {"ok": 1}, "find", request_id, address, 1, "svc"
    )
    return started, succeeded


@pytest.mark.parametrize("caller_traced", [True, False])
def test_every_database_command_of_a_request_is_under_its_server_span(
    traced: Traced, caller_traced: bool
) -> None:
    """The key lookup runs in an async dependency (as `security.require` does), the read in a sync handler
    (FastAPI's thread pool, as Motor runs pymongo in threads with the caller's context copied)."""
    listener = CommandTracer(tracer_provider=traced.provider)

    def run(collection: str, request_id: int) -> None:
        started, succeeded = command(collection, request_id)
        listener.started(started)
        listener.succeeded(succeeded)

    async def authenticated() -> str:
        run("api_keys", 1)
        return "principal"

    router = APIRouter(dependencies=[Depends(authenticated)])

    @router.get("/v1/devices/{device_id}/shadow")
    def shadow(device_id: str) -> dict[str, str]:
        run("shadows", 2)
        return {"device_id": device_id}

    caller_trace, caller_span = secrets.token_hex(16), secrets.token_hex(8)
    headers = {"traceparent": f"00-{caller_trace}-{caller_span}-01"} if caller_traced else {}
    app = build_app("test", Lifecycle(), routers=[router], registry=CollectorRegistry())
    with TestClient(app) as http:
        assert http.get("/v1/devices/dev-1/shadow", headers=headers).status_code == 200

    spans = traced.spans()
    (server,) = [s for s in spans if s.kind is SpanKind.SERVER]
    database = [s for s in spans if s.kind is SpanKind.CLIENT]
    assert sorted(s.name for s in database) == ["find api_keys", "find shadows"]
    assert server.context is not None
    for span in database:
        assert span.parent is not None
        assert span.parent.span_id == server.context.span_id, span.name
        assert span.context is not None
        assert span.context.trace_id == server.context.trace_id
    if caller_traced:
        assert format(server.context.trace_id, "032x") == caller_trace
        assert server.parent is not None
        assert format(server.parent.span_id, "016x") == caller_span
    else:
        assert server.parent is None
    assert (server.attributes or {})["http.route"] == "/v1/devices/{device_id}/shadow"
