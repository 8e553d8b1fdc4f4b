"""Traces of the consume loop on OpenTelemetry: a consume span and its publish span per batch of messages.

A span pair per message cost more than decrypting it, so messages received together share one pair (and a
message that arrives with its own `traceparent` gets a pair of its own, continuing that trace). Every event
carries its publish span's `traceparent`, so consumers downstream still join the trace.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Tracer

from fleet_contracts import topics
from fleet_ingest.ports import Received
from fleet_shared.tracing import messaging

TRACEPARENT = "traceparent"


class BatchTrace:
    """A consume span and its publish span for messages processed together, ended with the last of them."""

    __slots__ = ("carrier", "pending", "spans")

    def __init__(self, spans: tuple[Any, ...], carrier: dict[str, str], pending: int) -> None:
        self.spans = spans
        self.carrier = carrier
        self.pending = pending

    def settle(self, outcome: str | None = None) -> None:
        if outcome is not None:
            for span in self.spans:
                span.set_attribute("ingest.outcome", outcome)
        self.pending -= 1
        if self.pending == 0:
            for span in reversed(self.spans):
                span.end()


class BatchTracing:
    """Starts the span pairs for messages consumed from `topic` under `subscription`."""

    def __init__(self, tracer: Tracer, *, topic: str, subscription: str) -> None:
        self._tracer = tracer
        self._topic = topic
        self._subscription = subscription
        self._events_topic = topics.DEVICE_EVENTS.name

    def for_batch(self, batch: Sequence[Received]) -> BatchTrace | None:
        own = sum(1 for r in batch if TRACEPARENT in r.delivery.properties)
        return self._start({}, len(batch) - own) if own < len(batch) else None

    def continued(self, properties: Mapping[str, str]) -> BatchTrace | None:
        return self._start(properties, 1) if TRACEPARENT in properties else None

    def _start(self, properties: Mapping[str, str], pending: int) -> BatchTrace:
        # names and attributes per OpenTelemetry's messaging conventions (fleet_shared.tracing.messaging)
        consume = self._tracer.start_span(
            messaging.span_name("process", self._topic),
            context=propagate.extract(properties) if properties else None,
            kind=SpanKind.CONSUMER,
            attributes={
                **messaging.operation(messaging.PROCESS, "process", self._topic),
                messaging.BATCH_MESSAGE_COUNT: pending,
                messaging.CONSUMER_GROUP_NAME: self._subscription,
            },
        )
        publish = self._tracer.start_span(
            messaging.span_name("send", self._events_topic),
            context=trace.set_span_in_context(consume),
            kind=SpanKind.PRODUCER,
            attributes={
                **messaging.operation(messaging.SEND, "send", self._events_topic),
                messaging.BATCH_MESSAGE_COUNT: pending,
            },
        )
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(publish))
        return BatchTrace((consume, publish), carrier, pending)
