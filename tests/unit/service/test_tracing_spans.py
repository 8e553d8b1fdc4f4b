"""Where spans come from without a service doing anything: the broker's publish and process spans (with the
fleet id attributes), database spans from the command listener, the OpenAPI client span, batch spans, and the
exporters chosen from the environment."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

import pytest
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from pymongo import monitoring

from fleet_contracts import topics
from fleet_shared.pulsar import InlineContext, PulsarBroker, PulsarMessage, TestPulsarBroker
from fleet_shared.pulsar.opentelemetry import PulsarTelemetryMiddleware
from fleet_shared.service.telemetry import (
    DEFAULT_SAMPLER,
    DEFAULT_SAMPLER_RATIO,
    TracingSettings,
    sampler_of,
    sampling_env,
    span_exporters,
    tracer_provider,
)
from fleet_shared.tracing import BATCH_ID, DEVICE_ID, RELEASE_ID, CommandTracer, batch_span, tag_span
from fleet_shared.tracing.attributes import key_attribute

pytestmark = pytest.mark.unit


@pytest.fixture
def exported() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def by_name(spans: tuple[ReadableSpan, ...]) -> dict[str, ReadableSpan]:
    return {s.name: s for s in spans}


# -- which id a message key is ---------------------------------------------------------------------------


def test_message_keys_become_the_id_attribute_their_topic_is_keyed_by() -> None:
    assert key_attribute(topics.DEVICE_EVENTS.name) == DEVICE_ID
    assert key_attribute(topics.DEVICE_EVENTS.name + "-partition-3") == DEVICE_ID
    assert key_attribute("persistent://fleetsimaccess000001/out/event-partition-10") == DEVICE_ID
    assert key_attribute(topics.UNBINDING_EVENTS.name) == BATCH_ID
    assert key_attribute(topics.OTA_RELEASE_EVENTS.name) == RELEASE_ID
    assert key_attribute(topics.PAIRING_EVENTS.name) is None  # keyed by pairing token: not an id to trace by
    assert key_attribute("persistent://public/default/other") is None


def test_tag_span_sets_only_the_ids_given(exported: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    provider, exporter = exported
    with provider.get_tracer("t").start_as_current_span("work"):
        tag_span(device_id="dev-1", release_id=None)
    attributes = exporter.get_finished_spans()[0].attributes or {}
    assert attributes[DEVICE_ID] == "dev-1"
    assert RELEASE_ID not in attributes
    assert BATCH_ID not in attributes


# -- the broker's spans ----------------------------------------------------------------------------------


async def test_publish_and_process_spans_carry_messaging_attributes_and_one_trace(
    exported: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = exported
    broker = PulsarBroker(middlewares=[PulsarTelemetryMiddleware(tracer_provider=provider)])
    seen: list[dict[str, str]] = []

    @broker.subscriber(topics.DEVICE_EVENTS.name, subscription="status")
    async def on_event(message: Annotated[PulsarMessage, InlineContext("message")]) -> None:
        seen.append(dict(message.headers))

    async with TestPulsarBroker(broker) as test:
        await test.publish({"n": 1}, topics.DEVICE_EVENTS.name, key="dev-1")

    spans = by_name(exporter.get_finished_spans())
    publish = spans[f"send {topics.DEVICE_EVENTS.name}"]
    process = spans[f"process {topics.DEVICE_EVENTS.name}"]
    for span, operation in ((publish, "send"), (process, "process")):
        attributes = span.attributes or {}
        assert attributes["messaging.system"] == "pulsar"
        assert attributes["messaging.operation.type"] == operation
        assert attributes["messaging.destination.name"] == topics.DEVICE_EVENTS.name
        assert attributes[DEVICE_ID] == "dev-1"
        assert attributes["messaging.message.id"]
    assert publish.kind is SpanKind.PRODUCER
    assert process.kind is SpanKind.CONSUMER
    assert publish.context is not None
    assert process.context is not None
    assert process.context.trace_id == publish.context.trace_id
    assert "traceparent" in seen[0]


def test_a_broker_traces_by_default_and_not_twice() -> None:
    from faststream.opentelemetry.middleware import TelemetryMiddleware

    from fleet_shared.pulsar.opentelemetry import DefaultTracing

    def telemetry(broker: PulsarBroker) -> int:
        tracing = (TelemetryMiddleware, DefaultTracing)
        return sum(isinstance(m, tracing) for m in broker.config.broker_config.broker_middlewares)

    assert telemetry(PulsarBroker()) == 1
    assert telemetry(PulsarBroker(middlewares=[PulsarTelemetryMiddleware()])) == 1
    assert telemetry(PulsarBroker(telemetry=False)) == 0


# -- database spans --------------------------------------------------------------------------------------


def command_events(command: dict[str, Any], *, ok: bool) -> tuple[Any, Any]:
    address = ("127.0.0.1", 27017)
    started = monitoring.CommandStartedEvent(command, "status", 7, address, 1)
    name = next(iter(command))
    if ok:
        return started, monitoring.CommandSucceededEvent(
            timedelta(0), {"ok": 1}, name, 7, address, 1, "status"
        )
    failure = {"ok": 0, "code": 11000, "codeName": "DuplicateKey"}
    return started, monitoring.CommandFailedEvent(timedelta(0), failure, name, 7, address, 1, "status")


def test_database_spans_only_inside_a_trace_and_without_documents(
    exported: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = exported
    listener = CommandTracer(tracer_provider=provider)
    started, succeeded = command_events({"update": "shadows", "updates": [{"secret": "x"}]}, ok=True)
    listener.started(started)  # no current span: nothing recorded
    listener.succeeded(succeeded)
    assert exporter.get_finished_spans() == ()

    with provider.get_tracer("t").start_as_current_span("request"):
        listener.started(started)
        listener.succeeded(succeeded)
        started, failed = command_events({"insert": "history", "documents": []}, ok=False)
        listener.started(started)
        listener.failed(failed)
    spans = by_name(exporter.get_finished_spans())
    update = spans["update shadows"]
    assert update.kind is SpanKind.CLIENT
    assert dict(update.attributes or {}) == {
        "db.system": "mongodb",
        "db.system.name": "mongodb",
        "db.operation.name": "update",
        "db.collection.name": "shadows",
        "db.namespace": "status",
        "server.address": "127.0.0.1",
        "server.port": 27017,
    }
    assert update.parent is not None
    assert update.parent.span_id == spans["request"].context.span_id
    insert = spans["insert history"]
    assert insert.status.status_code is trace.StatusCode.ERROR
    assert (insert.attributes or {})["db.response.status_code"] == "11000"


# -- batch spans -----------------------------------------------------------------------------------------


def test_a_batch_span_continues_the_first_traced_message_and_links_the_others(
    exported: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = exported
    tracer = provider.get_tracer("t")
    carriers: list[dict[str, str]] = [{}]
    for name in ("m1", "m2", "m3"):
        with tracer.start_as_current_span(name):
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            carriers.append(carrier)
    with batch_span(tracer, "status flush", carriers, attributes={"batch.devices": 3}):
        pass
    spans = by_name(exporter.get_finished_spans())
    flush, first = spans["status flush"], spans["m1"]
    assert flush.context is not None
    assert first.context is not None
    assert flush.context.trace_id == first.context.trace_id
    assert flush.parent is not None
    assert flush.parent.span_id == first.context.span_id
    assert {link.context.span_id for link in flush.links} == {
        spans["m2"].context.span_id,
        spans["m3"].context.span_id,
    }


# -- exporters -------------------------------------------------------------------------------------------


def test_zipkin_export_is_configured_from_either_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.exporter.zipkin.json import ZipkinExporter

    monkeypatch.delenv("FLEET_ZIPKIN_ENDPOINT", raising=False)
    monkeypatch.setenv("OTEL_EXPORTER_ZIPKIN_ENDPOINT", "http://127.0.0.1:9411/api/v2/spans")
    assert TracingSettings().zipkin_endpoint == "http://127.0.0.1:9411/api/v2/spans"
    monkeypatch.setenv("FLEET_ZIPKIN_ENDPOINT", "http://127.0.0.1:19411/api/v2/spans")
    assert TracingSettings().zipkin_endpoint == "http://127.0.0.1:19411/api/v2/spans"

    (zipkin,) = span_exporters(None, TracingSettings().zipkin_endpoint, None)
    assert isinstance(zipkin, ZipkinExporter)
    assert zipkin.endpoint == "http://127.0.0.1:19411/api/v2/spans"
    both = span_exporters("http://collector:4318", "http://127.0.0.1:9411/api/v2/spans", None)
    assert [type(e).__name__ for e in both] == ["OTLPSpanExporter", "ZipkinExporter"]
    assert span_exporters(None, None, None) == []


# -- the Tuya OpenAPI client span ------------------------------------------------------------------------


async def test_openapi_calls_make_client_spans_and_send_the_trace_context(
    exported: tuple[TracerProvider, InMemorySpanExporter], monkeypatch: pytest.MonkeyPatch
) -> None:
    import httpx

    from fleet_shared.tuya import openapi
    from tests.unit.tuya.fake_tuya import ACCESS_ID, ACCESS_SECRET, FakeTuya

    provider, exporter = exported
    monkeypatch.setattr(openapi, "_tracer", provider.get_tracer("fleet_shared.tuya"))
    sent: list[httpx.Headers] = []
    device = {"id": "dev-9", "name": "Plug", "online": True, "status": []}

    def route(request: httpx.Request) -> dict[str, Any]:
        sent.append(request.headers)
        return device

    fake = FakeTuya(routes={("GET", "/v1.0/devices/dev-9"): route})
    client = openapi.TuyaOpenApiClient(
        ACCESS_ID,
        ACCESS_SECRET,
        base_url="https://tuya.test:8443",
        http=fake.client(),
        default_rate_limit=None,
    )
    with provider.get_tracer("t").start_as_current_span("handler"):
        await client.get_device("dev-9")

    spans = by_name(exporter.get_finished_spans())
    call = spans["GET /v1.0/devices/{device_id}"]
    assert call.kind is SpanKind.CLIENT
    attributes = dict(call.attributes or {})
    assert attributes["http.request.method"] == "GET"
    assert attributes["url.template"] == "/v1.0/devices/{device_id}"
    assert (attributes["server.address"], attributes["server.port"]) == ("tuya.test", 8443)
    assert attributes[DEVICE_ID] == "dev-9"
    assert call.context is not None
    assert sent[0]["traceparent"].split("-")[2] == format(call.context.span_id, "016x")
    assert all(ACCESS_SECRET not in str(v) for v in attributes.values())


# -- sampling --------------------------------------------------------------------------------------------


def test_the_sampler_is_opentelemetrys_standard_variables_checked_at_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pydantic import ValidationError

    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.25")
    sampler = sampler_of(TracingSettings(), exporting=True)
    assert sampler.get_description().startswith("ParentBased{root:TraceIdRatioBased{0.25}")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "TraceIdRatio")  # as the SDK reads it: any case
    assert sampler_of(TracingSettings(), exporting=False).get_description() == "TraceIdRatioBased{0.25}"
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    assert sampler_of(TracingSettings(), exporting=True).get_description() == "AlwaysOffSampler"

    # a misspelt sampler or an impossible ratio stops the service instead of tracing everything quietly
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_sometimes")
    with pytest.raises(ValidationError, match="OTEL_TRACES_SAMPLER"):
        TracingSettings()
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "5")
    with pytest.raises(ValidationError, match="OTEL_TRACES_SAMPLER_ARG"):
        TracingSettings()


def test_unset_a_ratio_of_new_traces_is_recorded_when_exported_and_only_a_callers_sampled_one_when_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for variable in (
        "OTEL_TRACES_SAMPLER",
        "OTEL_TRACES_SAMPLER_ARG",
        "FLEET_ZIPKIN_ENDPOINT",
        "OTEL_EXPORTER_ZIPKIN_ENDPOINT",
    ):
        monkeypatch.delenv(variable, raising=False)
    caller = trace.set_span_in_context(
        trace.NonRecordingSpan(
            trace.SpanContext(
                0x1234, 0x5678, is_remote=True, trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED)
            )
        )
    )

    exporting = tracer_provider("svc", exporter=InMemorySpanExporter())
    assert exporting.sampler.get_description().startswith(
        f"ParentBased{{root:TraceIdRatioBased{{{DEFAULT_SAMPLER_RATIO}}}"
    )
    tracer = exporting.get_tracer("t")
    roots = []
    for _ in range(2000):
        with tracer.start_as_current_span("root") as root:
            roots.append(root.is_recording())
            assert root.get_span_context().is_valid  # ids for the logs and the next service either way
            with tracer.start_as_current_span("child") as child:
                assert child.is_recording() == root.is_recording()  # a hop follows its parent
    assert 0.02 < sum(roots) / len(roots) < 0.1  # decided by trace id: ~5%
    with tracer.start_as_current_span("work", context=caller) as work:
        assert work.is_recording()  # a caller's sampled trace is always continued
    unsampled_caller = trace.set_span_in_context(
        trace.NonRecordingSpan(trace.SpanContext(0x1234, 0x5678, is_remote=True))
    )
    with tracer.start_as_current_span("work", context=unsampled_caller) as work:
        assert not work.is_recording()  # ... and a caller's unsampled one never recorded
    exporting.shutdown()
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.5")  # the ratio alone
    assert (
        sampler_of(TracingSettings(), exporting=True)
        .get_description()
        .startswith("ParentBased{root:TraceIdRatioBased{0.5}")
    )
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")  # named, no ratio: the SDK's 1.0
    monkeypatch.delenv("OTEL_TRACES_SAMPLER_ARG")
    assert (
        sampler_of(TracingSettings(), exporting=True)
        .get_description()
        .startswith("ParentBased{root:TraceIdRatioBased{1.0}")
    )
    monkeypatch.delenv("OTEL_TRACES_SAMPLER")

    unexported = tracer_provider("svc").get_tracer("t")
    with unexported.start_as_current_span("root") as root:
        # not recorded, yet a trace id for the logs and the next service
        assert not root.is_recording()
        assert root.get_span_context().is_valid
        assert not root.get_span_context().trace_flags.sampled
    with unexported.start_as_current_span("work", context=caller) as work:
        assert work.is_recording()  # the caller sampled this trace: its context goes on sampled
        assert work.get_span_context().trace_id == 0x1234


def test_the_local_stack_spells_out_the_default_sampler_and_keeps_one_it_is_given() -> None:
    assert sampling_env({}) == {
        "OTEL_TRACES_SAMPLER": DEFAULT_SAMPLER,
        "OTEL_TRACES_SAMPLER_ARG": str(DEFAULT_SAMPLER_RATIO),
    }
    assert sampling_env({"OTEL_TRACES_SAMPLER_ARG": "0.2"})["OTEL_TRACES_SAMPLER_ARG"] == "0.2"
    assert sampling_env({"OTEL_TRACES_SAMPLER": "always_on"}) == {"OTEL_TRACES_SAMPLER": "always_on"}
    given = {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.5"}
    assert sampling_env(given) == given
    for env in ({}, given, {"OTEL_TRACES_SAMPLER": "always_on"}):
        assert TracingSettings.model_validate(sampling_env(env))  # each a valid setting
