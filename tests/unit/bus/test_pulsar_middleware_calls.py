"""What the per-message path calls of each middleware: only the hooks it overrides (BaseMiddleware's own pass
through), and one default tracing middleware per message, spans or not."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

import pytest
from faststream._internal.context import ContextRepo
from faststream._internal.middlewares import BaseMiddleware
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from fleet_shared.pulsar import DeadLetter, InlineContext, PulsarBroker, PulsarMessage, TestPulsarBroker
from fleet_shared.pulsar import opentelemetry as broker_tracing
from fleet_shared.pulsar.acknowledgement import Acknowledgement
from fleet_shared.pulsar.subscriber import _hooks_of

pytestmark = pytest.mark.unit


def test_the_hooks_a_middleware_overrides_are_told_apart_from_inherited_ones() -> None:
    context_only = _hooks_of(broker_tracing.TraceContextOnly)
    assert (context_only.enters, context_only.exits) == (False, False)
    assert (context_only.consumes, context_only.publishes) == (True, True)

    ack = _hooks_of(Acknowledgement)
    assert (ack.enters, ack.exits, ack.consumes, ack.publishes) == (False, True, True, False)

    class OnReceive(BaseMiddleware):
        async def on_receive(self) -> None: ...

    class AfterProcessed(BaseMiddleware):
        async def after_processed(self, *args: Any) -> bool | None:
            return False

    assert (_hooks_of(OnReceive).enters, _hooks_of(OnReceive).exits) == (True, False)
    assert (_hooks_of(AfterProcessed).enters, _hooks_of(AfterProcessed).exits) == (False, True)


class OwnMiddleware:
    """Not a BaseMiddleware: every hook is called."""

    def __init__(self, log: list[str], msg: Any, context: Any) -> None:
        self.log = log

    async def __aenter__(self) -> OwnMiddleware:
        self.log.append("enter")
        return self

    async def __aexit__(self, *exc: Any) -> bool:
        self.log.append("exit")
        return False

    async def consume_scope(self, call_next: Any, msg: Any) -> Any:
        self.log.append("consume")
        return await call_next(msg)

    async def publish_scope(self, call_next: Any, cmd: Any) -> Any:
        self.log.append("publish")
        return await call_next(cmd)


class PublishOnly(BaseMiddleware):
    log: ClassVar[list[str]] = []

    async def publish_scope(self, call_next: Any, cmd: Any) -> Any:
        self.log.append(f"publish:{cmd.destination}")
        return await call_next(cmd)


async def test_every_hook_of_a_middleware_of_its_own_making_is_called_and_publish_scopes_apply() -> None:
    log: list[str] = []
    PublishOnly.log = log
    broker = PulsarBroker(
        middlewares=[lambda msg, /, *, context: OwnMiddleware(log, msg, context), PublishOnly]
    )

    @broker.subscriber("in", subscription="s")
    @broker.publisher("out")
    async def relay(body: dict[str, Any]) -> dict[str, Any]:
        log.append("handler")
        return body

    async with TestPulsarBroker(broker) as br:
        log.clear()
        await br.publish({"a": 1}, "in")
        relay.mock.assert_called_once_with({"a": 1})

    # The test broker's own publish goes through the publish scopes too; then the handler's message.
    assert log[:2] == ["publish", "publish:in"]
    handled = log[log.index("enter") :]
    assert handled[:3] == ["enter", "consume", "handler"]
    assert handled[3:5] == ["publish", "publish:out"]
    assert "exit" in handled


def test_the_default_broker_runs_one_tracing_middleware_per_message() -> None:
    middlewares = PulsarBroker().config.broker_config.broker_middlewares
    assert len(middlewares) == 1
    assert isinstance(middlewares[0], broker_tracing.DefaultTracing)


def exporting(monkeypatch: pytest.MonkeyPatch) -> tuple[InMemorySpanExporter, PulsarBroker]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = broker_tracing.DefaultTracing()
    tracing.spans = broker_tracing.PulsarTelemetryMiddleware(
        tracer_provider=provider, include_messages_counters=False
    )
    monkeypatch.setattr(broker_tracing, "spans_exported", lambda: True)
    return exporter, PulsarBroker(telemetry=False, middlewares=[tracing])


async def test_default_tracing_with_an_exporter_makes_semantic_convention_spans(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exporter, broker = exporting(monkeypatch)
    seen: list[str] = []

    @broker.subscriber("persistent://fleet/test/in", subscription="s")
    @broker.publisher("persistent://fleet/test/out")
    async def relay(body: dict[str, Any], message: Annotated[PulsarMessage, InlineContext("message")]) -> Any:
        seen.append(message.headers["traceparent"])
        return body

    async with TestPulsarBroker(broker) as br:
        await br.publish({"a": 1}, "persistent://fleet/test/in", key="dev-1")

    spans = {s.name: s for s in exporter.get_finished_spans()}
    # (TestPulsarBroker's own subscriber of the publisher's topic processes the result too)
    assert set(spans) == {
        "send persistent://fleet/test/in",
        "process persistent://fleet/test/in",
        "send persistent://fleet/test/out",
        "process persistent://fleet/test/out",
    }
    send, process = spans["send persistent://fleet/test/in"], spans["process persistent://fleet/test/in"]
    out = spans["send persistent://fleet/test/out"]
    for span, kind, operation in ((send, SpanKind.PRODUCER, "send"), (process, SpanKind.CONSUMER, "process"),
                                  (out, SpanKind.PRODUCER, "send")):  # fmt: skip
        attributes = span.attributes or {}
        assert span.kind is kind
        assert attributes["messaging.system"] == "pulsar"
        assert attributes["messaging.operation.type"] == operation
        assert attributes["messaging.operation.name"] == operation
        assert attributes["messaging.message.id"]
        assert "messaging.operation" not in attributes  # the deprecated attribute FastStream set
    assert (process.attributes or {})["messaging.destination.name"] == "persistent://fleet/test/in"
    assert (process.attributes or {})["messaging.consumer.group.name"] == "s"
    assert (out.attributes or {})["messaging.destination.name"] == "persistent://fleet/test/out"
    # the message carries its send span as `traceparent`; the process span continues it; the result's send
    # is a child of the process span
    assert send.context is not None
    assert process.context is not None
    flags = int(send.context.trace_flags)
    assert seen == [f"00-{send.context.trace_id:032x}-{send.context.span_id:016x}-{flags:02x}"]
    assert process.parent is not None
    assert process.parent.span_id == send.context.span_id
    assert out.parent is not None
    assert out.parent.span_id == process.context.span_id


async def test_a_failed_delivery_has_a_settlement_span_under_its_process_span(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exporter, broker = exporting(monkeypatch)

    @broker.subscriber(
        "persistent://fleet/test/in",
        subscription="s",
        dead_letter=DeadLetter(max_redeliveries=1, topic="dlq"),
    )
    async def fails(body: dict[str, Any]) -> None:
        raise RuntimeError("no")

    async with TestPulsarBroker(broker) as br:
        await br.publish({"a": 1}, "persistent://fleet/test/in")

    spans = exporter.get_finished_spans()
    processes = [s for s in spans if s.name == "process persistent://fleet/test/in"]
    settlements = [s for s in spans if (s.attributes or {}).get("messaging.operation.type") == "settle"]
    assert [s.name for s in settlements] == [
        "nack persistent://fleet/test/in",
        "dead_letter persistent://fleet/test/in",
    ]
    for process, settle in zip(processes, settlements, strict=True):
        assert process.status.status_code is StatusCode.ERROR
        assert (process.attributes or {})["error.type"] == "RuntimeError"
        assert settle.kind is SpanKind.CLIENT
        assert settle.parent is not None
        assert process.context is not None
        assert settle.parent.span_id == process.context.span_id
        assert (settle.attributes or {})["messaging.consumer.group.name"] == "s"


def test_without_an_exporter_one_context_only_middleware_serves_every_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(broker_tracing, "spans_exported", lambda: False)
    tracing = broker_tracing.DefaultTracing()
    context, other = ContextRepo(), ContextRepo()
    first = tracing(None, context=context)
    assert isinstance(first, broker_tracing.TraceContextOnly)
    assert tracing(object(), context=context) is first
    assert tracing(None, context=other) is not first
    assert tracing(None, context=other).context is other
