"""OpenTelemetry for PulsarBroker: W3C trace context travels in Pulsar message properties.

Every `PulsarBroker` traces with the global tracer provider (`DefaultTracing`) unless made with
`telemetry=False` or given a middleware of its own:
`PulsarBroker(url, middlewares=[PulsarTelemetryMiddleware(...)])`.
When no exporter receives spans (`fleet_shared.tracing.provider.spans_exported`), the default makes none: it
only carries the W3C context from a consumed message into the handler and on into what it publishes, and
starts a trace id where a message brought none, so log lines still join up across services. FastStream's
middleware costs tens of microseconds per message even when its spans record nothing.
Send, process and settlement spans follow OpenTelemetry's messaging conventions (`send {topic}`,
`process {topic}`, `messaging.system = pulsar`, the operation, the topic, the subscription, the message id:
`fleet_shared.tracing.messaging`) and carry `fleet.device_id` / `fleet.batch_id` / `fleet.release_id` when
the topic is keyed by one (`fleet_shared.tracing.attributes`).
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from faststream._internal.middlewares import BaseMiddleware
from faststream.opentelemetry.consts import ERROR_TYPE, MESSAGING_DESTINATION_PUBLISH_NAME
from faststream.opentelemetry.middleware import TelemetryMiddleware
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.semconv.schemas import Schemas
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from fleet_shared.tracing import messaging
from fleet_shared.tracing.attributes import key_attributes
from fleet_shared.tracing.messaging import DESTINATION_NAME, PULSAR, SYSTEM
from fleet_shared.tracing.provider import spans_exported

from .message import PulsarMessage, PulsarPublishCommand

if TYPE_CHECKING:
    from types import TracebackType

    from faststream._internal.basic_types import AsyncFunc, AsyncFuncAny
    from faststream._internal.context.repository import ContextRepo
    from faststream.message import StreamMessage
    from opentelemetry.metrics import Meter, MeterProvider
    from opentelemetry.trace import TracerProvider


class PulsarTelemetryMiddleware(TelemetryMiddleware[PulsarPublishCommand]):
    """Spans per OpenTelemetry's messaging conventions (`fleet_shared.tracing.messaging`): a PRODUCER span
    `send {topic}` around each send, whose context is the message's `traceparent`; a CONSUMER span
    `process {topic}` around each handler, a child of the context the message carries (one trace across
    services, as before); a `{nack|dead_letter|reject} {topic}` settlement span under it when a delivery
    fails (`settle_span`). FastStream's duration metrics (`messaging.process.duration`,
    `messaging.publish.duration`) are recorded as its own middleware records them, on the meter given."""

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        meter: Meter | None = None,
        include_messages_counters: bool = True,
    ) -> None:
        super().__init__(
            settings_provider_factory=lambda _: None,
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
            meter=meter,
            include_messages_counters=include_messages_counters,
        )
        self.tracer = trace.get_tracer(
            "fleet_shared.pulsar", tracer_provider=tracer_provider, schema_url=Schemas.V1_39_0.value
        )

    def __call__(self, msg: Any | None, /, *, context: ContextRepo) -> MessagingSpans:  # type: ignore[override]
        return MessagingSpans(msg, context=context, tracer=self.tracer, metrics=self._metrics)


class MessagingSpans(BaseMiddleware[PulsarPublishCommand]):
    """One message's spans (see `PulsarTelemetryMiddleware`)."""

    def __init__(
        self, msg: Any | None, /, *, context: ContextRepo, tracer: trace.Tracer, metrics: Any
    ) -> None:
        super().__init__(msg, context=context)
        self._tracer = tracer
        self._metrics = metrics
        self._span: trace.Span | None = None

    async def publish_scope(self, call_next: AsyncFunc, cmd: PulsarPublishCommand) -> Any:
        topic = cmd.destination
        attributes = messaging.operation(messaging.SEND, "send", topic)
        if cmd.correlation_id:
            attributes[messaging.MESSAGE_CONVERSATION_ID] = cmd.correlation_id
        if cmd.key:
            attributes[messaging.PULSAR_MESSAGE_KEY] = cmd.key
            attributes.update(key_attributes(topic, cmd.key))
        # a handler's result is sent from its process span (which has ended its handler scope by then)
        parent = None if self._span is None else trace.set_span_in_context(self._span)
        began = time.perf_counter()
        measured: dict[str, Any] = {SYSTEM: PULSAR, DESTINATION_NAME: topic}
        try:
            with self._tracer.start_as_current_span(
                messaging.span_name("send", topic),
                context=parent,
                kind=SpanKind.PRODUCER,
                attributes=attributes,
            ) as span:
                _W3C.inject(cmd.headers)  # the send span is the message's creation context
                result = await call_next(cmd)
                if result is not None and span.is_recording():
                    span.set_attribute(messaging.MESSAGE_ID, str(result))
        except Exception as e:
            measured[ERROR_TYPE] = type(e).__name__
            raise
        finally:
            self._metrics.observe_publish(measured, time.perf_counter() - began, 1)
        return result

    async def consume_scope(self, call_next: AsyncFuncAny, msg: StreamMessage[Any]) -> Any:
        raw = msg.raw_message
        topic = str(raw.topic_name())
        attributes = messaging.operation(messaging.PROCESS, "process", topic)
        attributes[messaging.MESSAGE_ID] = msg.message_id
        attributes[messaging.MESSAGE_BODY_SIZE] = len(msg.body)
        if (subscription := getattr(msg, "subscription", None)) is not None:
            attributes[messaging.CONSUMER_GROUP_NAME] = subscription
        if msg.correlation_id:
            attributes[messaging.MESSAGE_CONVERSATION_ID] = msg.correlation_id
        if key := raw.partition_key():
            attributes[messaging.PULSAR_MESSAGE_KEY] = key
            attributes.update(key_attributes(topic, key))
        carried = _W3C.extract(msg.headers)  # no valid traceparent: the process span starts a trace
        span = self._span = self._tracer.start_span(
            messaging.span_name("process", topic),
            context=carried,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
        )
        if isinstance(msg, PulsarMessage):
            msg.spans = self  # its settlement, after this scope, is traced under it (`settle_span`)
        measured: dict[str, Any] = {SYSTEM: PULSAR, MESSAGING_DESTINATION_PUBLISH_NAME: topic}
        began = time.perf_counter()
        token = otel_context.attach(trace.set_span_in_context(span, carried))
        try:
            return await call_next(msg)
        except Exception as e:
            measured[ERROR_TYPE] = type(e).__name__
            if span.is_recording():
                span.set_attribute(ERROR_TYPE, type(e).__qualname__)
                span.set_status(Status(StatusCode.ERROR, str(e)[:300]))
            raise
        finally:
            otel_context.detach(token)
            self._metrics.observe_consume(measured, time.perf_counter() - began, 1)

    async def after_processed(
        self,
        exc_type: type[BaseException] | None = None,
        exc_val: BaseException | None = None,
        exc_tb: TracebackType | None = None,
    ) -> bool | None:
        """Ends the process span once the handler's results are sent (as FastStream's middleware does)."""
        if self._span is not None:
            self._span.end()
        return False


def settle_span(message: PulsarMessage, operation_name: str, subscription: str) -> trace.Span:
    """A CLIENT span `{operation_name} {topic}` (`messaging.operation.type = settle`) under the message's
    process span, for a settlement worth seeing in a trace: a nack, a dead letter, a reject. Nothing is made
    (a non-recording span) for a message processed without spans."""
    spans = message.spans
    parent = None if spans is None else spans._span
    # the process span has ended by now (settlement comes after its middleware's exit): a sampled one
    if spans is None or parent is None or not parent.get_span_context().trace_flags.sampled:
        return trace.INVALID_SPAN
    topic = message.topic
    attributes = messaging.operation(messaging.SETTLE, operation_name, topic)
    attributes[messaging.CONSUMER_GROUP_NAME] = subscription
    attributes[messaging.MESSAGE_ID] = message.message_id
    return spans._tracer.start_span(
        messaging.span_name(operation_name, topic),
        context=trace.set_span_in_context(parent),
        kind=SpanKind.CLIENT,
        attributes=attributes,
    )


class PublishedMessageId(BaseMiddleware[PulsarPublishCommand]):
    """Inside the publish span of a telemetry middleware of FastStream's given to the broker (so placed after
    it): the id Pulsar gave the message as `messaging.message.id`."""

    def __init__(self, msg: Any | None, /, *, context: ContextRepo) -> None:
        super().__init__(msg, context=context)

    async def publish_scope(self, call_next: AsyncFunc, cmd: PulsarPublishCommand) -> Any:
        result = await call_next(cmd)
        if result is not None:
            span = trace.get_current_span()
            if span.is_recording():
                span.set_attribute(messaging.MESSAGE_ID, str(result))
        return result


_W3C = TraceContextTextMapPropagator()
_TRACEPARENT = "traceparent"  # the header `_W3C` reads the trace context from
_TRACESTATE = "tracestate"
# The propagator's own pattern and limit (tests/unit/service pins its source).
_TRACEPARENT_FORMAT = TraceContextTextMapPropagator._TRACEPARENT_HEADER_FORMAT_RE
_TRACEPARENT_MAXIMUM_LENGTH = TraceContextTextMapPropagator._TRACEPARENT_MAXIMUM_LENGTH
_ZERO_TRACE_ID = "0" * 32
_ZERO_SPAN_ID = "0" * 16
_UNSAMPLED = trace.TraceFlags(trace.TraceFlags.DEFAULT)
_NOTHING_CARRIED = Context()  # what the propagator extracts from no header; copied, never changed


class TraceContextOnly(BaseMiddleware[PulsarPublishCommand]):
    """No spans: the consumed message's trace context (or a new trace id) is current while its handler runs,
    so its log lines carry the trace id and what it publishes carries the context on."""

    def __init__(self, msg: Any | None, /, *, context: ContextRepo) -> None:
        super().__init__(msg, context=context)

    async def consume_scope(self, call_next: AsyncFuncAny, msg: StreamMessage[Any]) -> Any:
        token = otel_context.attach(carried_context(msg.headers))
        try:
            return await call_next(msg)
        finally:
            otel_context.detach(token)

    async def publish_scope(self, call_next: AsyncFunc, cmd: PulsarPublishCommand) -> Any:
        if trace.get_current_span() is not trace.INVALID_SPAN:  # else the propagator would inject nothing
            _W3C.inject(cmd.headers)
        return await call_next(cmd)


def carried_context(headers: Mapping[str, Any]) -> Context:
    """The trace context a message's headers carry, as `TraceContextTextMapPropagator.extract` reads it; a new
    unsampled trace where they carry none (or an invalid one).

    A plain `traceparent` (no `tracestate`, a string of normal length: what the bus itself writes) is read
    here with the propagator's own pattern and checks, in a fraction of its time (its getter's checks, a
    regex lookup by pattern, then asking the result for its span again); anything else goes to the
    propagator. `tests/unit/service` pins the propagator's source and compares the two.
    """
    parent = headers.get(_TRACEPARENT)
    if parent is None:
        return trace.set_span_in_context(trace.NonRecordingSpan(_new_trace()), _NOTHING_CARRIED)
    if type(parent) is not str or _TRACESTATE in headers or len(parent) > _TRACEPARENT_MAXIMUM_LENGTH:
        carried = _W3C.extract(headers)
        if trace.get_current_span(carried).get_span_context().is_valid:
            return carried
        return trace.set_span_in_context(trace.NonRecordingSpan(_new_trace()), carried)
    match = _TRACEPARENT_FORMAT.search(parent)
    if match is None:
        return trace.set_span_in_context(trace.NonRecordingSpan(_new_trace()), _NOTHING_CARRIED)
    version, trace_id, span_id, flags, rest = match.groups()
    if (
        trace_id == _ZERO_TRACE_ID
        or span_id == _ZERO_SPAN_ID
        or version == "ff"
        or (version == "00" and rest)
    ):
        return trace.set_span_in_context(trace.NonRecordingSpan(_new_trace()), _NOTHING_CARRIED)
    parent_span = trace.SpanContext(
        trace_id=int(trace_id, 16),
        span_id=int(span_id, 16),
        is_remote=True,
        trace_flags=trace.TraceFlags(int(flags, 16)),
        trace_state=None,
    )
    return trace.set_span_in_context(trace.NonRecordingSpan(parent_span), _NOTHING_CARRIED)


def _new_trace() -> trace.SpanContext:
    # ids as the SDK makes them (random, non-zero), not sampled: nothing records them
    return trace.SpanContext(
        trace_id=random.getrandbits(128) or 1,
        span_id=random.getrandbits(64) or 1,
        is_remote=False,
        trace_flags=_UNSAMPLED,
    )


class DefaultTracing:
    """The broker's default: `PulsarTelemetryMiddleware`'s spans while spans are exported, else
    `TraceContextOnly`; asked per message, so a provider configured after the
    broker is built counts.

    `TraceContextOnly` keeps nothing per message (its scopes work on their arguments, it never reads its
    `msg`), so one instance per context serves every message."""

    __slots__ = ("_context_only", "spans")

    def __init__(self) -> None:
        self.spans = PulsarTelemetryMiddleware(include_messages_counters=False)
        self._context_only: TraceContextOnly | None = None

    def __call__(self, msg: Any | None, /, *, context: ContextRepo) -> BaseMiddleware[PulsarPublishCommand]:
        if spans_exported():
            return self.spans(msg, context=context)
        only = self._context_only
        if only is None or only.context is not context:
            only = self._context_only = TraceContextOnly(None, context=context)
        return only


def telemetry_middlewares(given: Sequence[Any]) -> tuple[Any, ...]:
    """The broker's default tracing, before `given` middlewares, unless `given` brings its own (then, for one
    of FastStream's, the message id is added inside it)."""
    if any(isinstance(m, PulsarTelemetryMiddleware) for m in given):
        return tuple(given)
    if any(isinstance(m, TelemetryMiddleware) for m in given):
        return (*given, PublishedMessageId)
    return (DefaultTracing(), *given)
