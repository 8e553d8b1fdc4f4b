"""OpenTelemetry for PulsarBroker: W3C trace context travels in Pulsar message properties.

Every `PulsarBroker` traces with the global tracer provider (`DefaultTracing`) unless made with
`telemetry=False` or given a middleware of its own:
`PulsarBroker(url, middlewares=[PulsarTelemetryMiddleware(...)])`.
When no exporter receives spans (`fleet_shared.tracing.provider.spans_exported`), the default makes none: it
only carries the W3C context from a consumed message into the handler and on into what it publishes, and
starts a trace id where a message brought none, so log lines still join up across services. FastStream's
middleware costs tens of microseconds per message even when its spans record nothing.
Publish and process spans follow OpenTelemetry's messaging conventions (`messaging.system = pulsar`, the
topic, the message id, the key) and carry `fleet.device_id` / `fleet.batch_id` / `fleet.release_id` when the
topic is keyed by one (`fleet_shared.tracing.attributes`).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, Self

from faststream._internal.middlewares import BaseMiddleware
from faststream.opentelemetry import TelemetrySettingsProvider
from faststream.opentelemetry.consts import MESSAGING_DESTINATION_PUBLISH_NAME
from faststream.opentelemetry.middleware import TelemetryMiddleware
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.semconv.trace import SpanAttributes
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from fleet_shared.tracing.attributes import key_attributes
from fleet_shared.tracing.provider import spans_exported

from .message import PulsarPublishCommand

if TYPE_CHECKING:
    from types import TracebackType

    import pulsar
    from faststream._internal.basic_types import AsyncFunc, AsyncFuncAny
    from faststream._internal.context.repository import ContextRepo
    from faststream.message import StreamMessage
    from opentelemetry.metrics import Meter, MeterProvider
    from opentelemetry.trace import TracerProvider

MESSAGING_PULSAR_KEY = "messaging.pulsar.message.key"
MESSAGING_PULSAR_SUBSCRIPTION = "messaging.pulsar.subscription"
MESSAGING_OPERATION_TYPE = "messaging.operation.type"


class PulsarTelemetrySettingsProvider(TelemetrySettingsProvider["pulsar.Message", PulsarPublishCommand]):
    """Span attributes per OpenTelemetry's messaging conventions, `messaging.system = pulsar`."""

    __slots__ = ("messaging_system",)

    def __init__(self) -> None:
        self.messaging_system = "pulsar"

    def get_consume_attrs_from_message(self, msg: StreamMessage[pulsar.Message]) -> dict[str, Any]:
        raw = msg.raw_message
        topic = str(raw.topic_name())
        attrs: dict[str, Any] = {
            SpanAttributes.MESSAGING_SYSTEM: self.messaging_system,
            MESSAGING_OPERATION_TYPE: "process",
            SpanAttributes.MESSAGING_DESTINATION_NAME: topic,
            SpanAttributes.MESSAGING_MESSAGE_ID: msg.message_id,
            SpanAttributes.MESSAGING_MESSAGE_CONVERSATION_ID: msg.correlation_id,
            SpanAttributes.MESSAGING_MESSAGE_PAYLOAD_SIZE_BYTES: len(msg.body),
            MESSAGING_DESTINATION_PUBLISH_NAME: topic,
        }
        if key := raw.partition_key():
            attrs[MESSAGING_PULSAR_KEY] = key
            attrs.update(key_attributes(topic, key))
        return attrs

    def get_consume_destination_name(self, msg: StreamMessage[pulsar.Message]) -> str:
        return str(msg.raw_message.topic_name())

    def get_publish_attrs_from_cmd(self, cmd: PulsarPublishCommand) -> dict[str, Any]:
        attrs: dict[str, Any] = {
            SpanAttributes.MESSAGING_SYSTEM: self.messaging_system,
            MESSAGING_OPERATION_TYPE: "publish",
            SpanAttributes.MESSAGING_DESTINATION_NAME: cmd.destination,
            SpanAttributes.MESSAGING_MESSAGE_CONVERSATION_ID: cmd.correlation_id,
        }
        if cmd.key:
            attrs[MESSAGING_PULSAR_KEY] = cmd.key
            attrs.update(key_attributes(cmd.destination, cmd.key))
        return attrs

    def get_publish_destination_name(self, cmd: PulsarPublishCommand) -> str:
        return cmd.destination


class PulsarTelemetryMiddleware(TelemetryMiddleware[PulsarPublishCommand]):
    """`TelemetryMiddleware` preset with the Pulsar settings provider (see `telemetry_middlewares`)."""

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        meter: Meter | None = None,
        include_messages_counters: bool = True,
    ) -> None:
        super().__init__(
            settings_provider_factory=lambda _: PulsarTelemetrySettingsProvider(),
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
            meter=meter,
            include_messages_counters=include_messages_counters,
        )


async def _recording_message_id(call_next: AsyncFunc, cmd: PulsarPublishCommand) -> Any:
    """Publish; then the id Pulsar gave the message (known only once it is persisted) goes on the current
    span as `messaging.message.id`."""
    result = await call_next(cmd)
    if result is not None:
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attribute(SpanAttributes.MESSAGING_MESSAGE_ID, str(result))
    return result


class PublishedMessageId(BaseMiddleware[PulsarPublishCommand]):
    """Inside the publish span of a telemetry middleware given to the broker (so placed after it): the id
    Pulsar gave the message as `messaging.message.id`."""

    def __init__(self, msg: Any | None, /, *, context: ContextRepo) -> None:
        super().__init__(msg, context=context)

    async def publish_scope(self, call_next: AsyncFunc, cmd: PulsarPublishCommand) -> Any:
        return await _recording_message_id(call_next, cmd)


class _SpansWithMessageId(BaseMiddleware[PulsarPublishCommand]):
    """FastStream's span middleware for one message, with the published message's id on its publish span:
    one middleware where `PublishedMessageId` would be a second on every message."""

    __slots__ = ("_spans",)

    def __init__(self, spans: BaseMiddleware[PulsarPublishCommand], /, *, context: ContextRepo) -> None:
        super().__init__(spans.msg, context=context)
        self._spans = spans

    async def __aenter__(self) -> Self:
        await self._spans.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_val: BaseException | None = None,
        exc_tb: TracebackType | None = None,
    ) -> bool | None:
        return await self._spans.__aexit__(exc_type, exc_val, exc_tb)

    async def consume_scope(self, call_next: AsyncFuncAny, msg: StreamMessage[Any]) -> Any:
        return await self._spans.consume_scope(call_next, msg)

    async def publish_scope(self, call_next: AsyncFunc, cmd: PulsarPublishCommand) -> Any:
        return await self._spans.publish_scope(partial(_recording_message_id, call_next), cmd)


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
    """The broker's default: `PulsarTelemetryMiddleware`'s spans (with the published message's id) while
    spans are exported, else `TraceContextOnly`; asked per message, so a provider configured after the
    broker is built counts.

    `TraceContextOnly` keeps nothing per message (its scopes work on their arguments, it never reads its
    `msg`), so one instance per context serves every message."""

    __slots__ = ("_context_only", "spans")

    def __init__(self) -> None:
        self.spans = PulsarTelemetryMiddleware(include_messages_counters=False)
        self._context_only: TraceContextOnly | None = None

    def __call__(self, msg: Any | None, /, *, context: ContextRepo) -> BaseMiddleware[PulsarPublishCommand]:
        if spans_exported():
            return _SpansWithMessageId(self.spans(msg, context=context), context=context)
        only = self._context_only
        if only is None or only.context is not context:
            only = self._context_only = TraceContextOnly(None, context=context)
        return only


def telemetry_middlewares(given: Sequence[Any]) -> tuple[Any, ...]:
    """The broker's default tracing, before `given` middlewares, unless `given` brings its own (then only the
    message id is added, inside it)."""
    if any(isinstance(m, TelemetryMiddleware) for m in given):
        return (*given, PublishedMessageId)
    return (DefaultTracing(), *given)
