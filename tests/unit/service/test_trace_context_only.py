"""Without an exporter the broker makes no spans, yet the trace context still travels: from a consumed
message into its handler (log lines carry the trace id) and on into what the handler publishes."""

from __future__ import annotations

import hashlib
import inspect
from typing import Annotated

import pytest
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from fleet_contracts import topics
from fleet_shared.pulsar import InlineContext, PulsarBroker, PulsarMessage, TestPulsarBroker
from fleet_shared.pulsar import opentelemetry as broker_tracing
from fleet_shared.tracing.provider import ServiceTracerProvider, global_provider, spans_exported

pytestmark = pytest.mark.unit

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER = f"00-{TRACE}-00f067aa0ba902b7-01"
NEXT = "persistent://fleet/test/next"


def service_provider(*, exports: bool) -> ServiceTracerProvider:
    return ServiceTracerProvider(exports_spans=exports, resource=Resource.create({}), sampler=ALWAYS_ON)


def test_spans_count_as_exported_only_where_something_can_export_them() -> None:
    assert spans_exported(trace.ProxyTracerProvider()) is False
    assert spans_exported(trace.NoOpTracerProvider()) is False
    assert spans_exported(service_provider(exports=False)) is False
    assert spans_exported(service_provider(exports=True)) is True
    assert spans_exported(TracerProvider()) is True  # someone else's SDK provider: assume it exports


async def relay(headers: dict[str, str] | None) -> tuple[list[trace.SpanContext], list[dict[str, str]]]:
    """Publish one message (with `headers`) to a handler that republishes it; what the handler saw as its
    current span, and the headers of what it published."""
    broker = PulsarBroker()
    current: list[trace.SpanContext] = []
    forwarded: list[dict[str, str]] = []

    @broker.subscriber(topics.DEVICE_EVENTS.name, subscription="status")
    async def on_event(body: dict[str, int]) -> None:
        current.append(trace.get_current_span().get_span_context())
        await broker.publish(body, NEXT, key="dev-1")

    @broker.subscriber(NEXT, subscription="next")
    async def on_next(message: Annotated[PulsarMessage, InlineContext("message")]) -> None:
        forwarded.append(dict(message.headers))

    async with TestPulsarBroker(broker) as test:
        await test.publish({"n": 1}, topics.DEVICE_EVENTS.name, key="dev-1", headers=headers)
    return current, forwarded


@pytest.fixture
def nothing_exported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(broker_tracing, "spans_exported", lambda: False)


@pytest.mark.usefixtures("nothing_exported")
async def test_a_callers_trace_is_current_in_the_handler_and_carried_on() -> None:
    current, forwarded = await relay({"traceparent": CALLER})
    assert format(current[0].trace_id, "032x") == TRACE
    assert not trace.get_current_span().get_span_context().is_valid  # detached again after the handler
    assert forwarded[0]["traceparent"].split("-")[1] == TRACE


@pytest.mark.usefixtures("nothing_exported")
async def test_a_message_without_a_trace_starts_one_that_is_not_sampled() -> None:
    current, forwarded = await relay(None)
    ctx = current[0]
    assert ctx.is_valid
    assert not ctx.trace_flags.sampled
    assert forwarded[0]["traceparent"].split("-")[1] == format(ctx.trace_id, "032x")


async def test_spans_are_made_again_once_an_exporter_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    chosen = broker_tracing.DefaultTracing()
    monkeypatch.setattr(broker_tracing, "spans_exported", lambda: True)
    assert not isinstance(chosen(None, context=PulsarBroker().context), broker_tracing.TraceContextOnly)
    monkeypatch.setattr(broker_tracing, "spans_exported", lambda: False)
    assert isinstance(chosen(None, context=PulsarBroker().context), broker_tracing.TraceContextOnly)


def test_the_global_provider_is_read_as_set_without_asking_the_environment_each_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exporting = service_provider(exports=True)
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", exporting)
    assert global_provider() is exporting
    assert spans_exported() is True
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", None)
    assert global_provider() is None
    assert spans_exported() is False


def test_the_global_read_is_the_one_the_api_sets_and_reads() -> None:
    # `global_provider` reads opentelemetry's private global: the one set_tracer_provider sets, and the
    # one get_tracer_provider returns once set.
    assert "_TRACER_PROVIDER = tracer_provider" in inspect.getsource(trace._set_tracer_provider)
    assert 'return cast("TracerProvider", _TRACER_PROVIDER)' in inspect.getsource(trace.get_tracer_provider)


# `carried_context` reads a plain traceparent as this source does. When an upgrade changes it, re-read the new
# version, port the change, then update the digest.
MIRRORED_EXTRACT = "4f9bf25de15cf0b4"


def test_the_carried_context_mirrors_the_propagator_version_it_was_written_against() -> None:
    source = inspect.getsource(TraceContextTextMapPropagator)
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    assert digest == MIRRORED_EXTRACT, (
        "TraceContextTextMapPropagator changed: port the change to fleet_shared.pulsar.opentelemetry."
        f"carried_context, then set MIRRORED_EXTRACT = {digest!r}"
    )


SPAN = "00f067aa0ba902b7"
CARRIED = [
    {"traceparent": CALLER},
    {"traceparent": f"00-{TRACE}-{SPAN}-00"},
    {"traceparent": f" \t{CALLER} "},
    {"traceparent": f"01-{TRACE}-{SPAN}-01-future-fields"},
    {"traceparent": f"00-{TRACE}-{SPAN}-01-extra"},
    {"traceparent": f"ff-{TRACE}-{SPAN}-01"},
    {"traceparent": f"00-{'0' * 32}-{SPAN}-01"},
    {"traceparent": f"00-{TRACE}-{'0' * 16}-01"},
    {"traceparent": f"00-{TRACE.upper()}-{SPAN}-01"},
    {"traceparent": "garbage"},
    {"traceparent": ""},
    {"traceparent": CALLER, "tracestate": "vendor=value"},
    {"traceparent": f"01-{TRACE}-{SPAN}-01-{'x' * 600}"},
    {},
]


@pytest.mark.parametrize("headers", CARRIED)
def test_the_carried_context_is_what_the_propagator_extracts_or_a_new_trace(headers: dict[str, str]) -> None:
    extracted = trace.get_current_span(TraceContextTextMapPropagator().extract(headers)).get_span_context()
    carried = trace.get_current_span(broker_tracing.carried_context(headers)).get_span_context()
    assert carried.is_valid
    if extracted.is_valid:
        assert carried == extracted
        assert carried.trace_state == extracted.trace_state
    else:  # a trace of our own, started here and not sampled
        assert not carried.is_remote
        assert not carried.trace_flags.sampled
