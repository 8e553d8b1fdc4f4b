"""The shadow write in the device report's trace: a flush runs in a `status flush` span (child of the first
traced message's consume span, linked to the others); each device written gets a `status shadow write` span
under the consume span of its newest traced message once its shadow is durable, naming and linking the
flush."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, format_trace_id

from fleet_shared.tracing import DEVICE_ID
from fleet_status.adapters.tuya import SchemaCache
from fleet_status.domain.shadow import DeviceFacts, DpReading, StatusReport
from fleet_status.service_layer.writer import (
    FLUSH_SPAN,
    FLUSH_TRACE_ID,
    SHADOW_CHANGED,
    SHADOW_MESSAGES,
    SHADOW_VERSION,
    WRITTEN_SPAN,
    ShadowWriter,
)
from tests.unit.status.fakes import FakeHistoryStore, FakePublisher, FakeSchemaStore, FakeShadowStore

pytestmark = pytest.mark.unit


@pytest.fixture
def exported() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def report(device: str, t: int, value: int | None = None) -> DeviceFacts:
    reading = DpReading("temp", t if value is None else value, t)
    return DeviceFacts(device, (StatusReport((reading,)),), product_id="p1")


def writer_with(provider: TracerProvider) -> tuple[ShadowWriter, FakeShadowStore]:
    store = FakeShadowStore()
    writer = ShadowWriter(
        store,
        FakeHistoryStore(),
        SchemaCache(None, FakeSchemaStore()),
        FakePublisher(),
        tenant="t",
        region="eu",
        max_delay_s=0,
        tracer=provider.get_tracer("test"),
    )
    return writer, store


def named(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


async def test_each_traced_message_gets_its_write_under_its_consume_span_linked_to_the_flush(
    exported: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = exported
    writer, _store = writer_with(provider)
    tracer = provider.get_tracer("consumer")
    consumed: dict[str, SpanContext] = {}
    for name, (device, t) in {"a": ("d1", 1), "b": ("d2", 2), "c": ("d1", 3)}.items():
        with tracer.start_as_current_span(f"process {name}") as span:
            consumed[name] = span.get_span_context()
            await writer.submit(report(device, t), None, tenant="t", region="eu")
    await writer.submit(report("d3", 4), None, tenant="t", region="eu")  # not traced
    await writer.flush_once()

    spans = exporter.get_finished_spans()
    [flush] = named(spans, FLUSH_SPAN)
    assert flush.parent is not None
    assert flush.parent.span_id == consumed["a"].span_id
    assert {link.context.span_id for link in flush.links} == {consumed["b"].span_id, consumed["c"].span_id}
    assert flush.context is not None
    writes = {s.parent.span_id: s for s in named(spans, WRITTEN_SPAN) if s.parent is not None}
    # one per device written and traced: under its newest traced message (c for d1), none for untraced d3
    assert set(writes) == {consumed["b"].span_id, consumed["c"].span_id}
    for name, device, others in (("b", "d2", []), ("c", "d1", ["a"])):
        write = writes[consumed[name].span_id]
        assert write.context is not None
        assert write.context.trace_id == consumed[name].trace_id
        attributes = write.attributes or {}
        assert attributes[DEVICE_ID] == device
        assert attributes[SHADOW_VERSION] == 1
        assert attributes[SHADOW_CHANGED] is True
        assert attributes[SHADOW_MESSAGES] == 1 + len(others)
        assert attributes[FLUSH_TRACE_ID] == format_trace_id(flush.context.trace_id)
        linked = [link.context.span_id for link in write.links]
        assert linked == [flush.context.span_id, *(consumed[o].span_id for o in others)]
        assert write.start_time is not None
        assert write.end_time is not None
        assert write.start_time <= write.end_time


async def test_a_replayed_report_is_traced_as_durable_without_a_change(
    exported: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = exported
    writer, store = writer_with(provider)
    tracer = provider.get_tracer("consumer")
    for _ in range(2):
        with tracer.start_as_current_span("process"):
            await writer.submit(report("d1", 1), None, tenant="t", region="eu")
        await writer.flush_once()
    first, replay = named(exporter.get_finished_spans(), WRITTEN_SPAN)
    assert (first.attributes or {})[SHADOW_CHANGED] is True
    assert (replay.attributes or {})[SHADOW_CHANGED] is False
    assert (replay.attributes or {})[SHADOW_VERSION] == store.docs["d1"].shadow.version == 1


async def test_an_untraced_batch_makes_no_span(exported: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    provider, exporter = exported
    writer, store = writer_with(provider)
    await writer.submit(report("d1", 1), None, tenant="t", region="eu")
    await writer.flush_once()
    assert store.docs["d1"].shadow.version == 1
    assert exporter.get_finished_spans() == ()
