"""A span for work done once for many messages (a batched database write, a relay of many events).

Per OpenTelemetry's messaging conventions a batch's span links to the context of each message it handles. It
is also made a child of the first traced message, so that message's trace shows the batch (and the database
write inside it) in place: one device report can be followed from the simulator to the shadow written.

A batching writer wraps each flush (status's `ShadowWriter.flush_once`, say):

    with batch_span(_tracer, "status flush", [p.message.headers for ps in batch.values() for p in ps
                                              if p.message is not None]):
        lost = await self._flush(batch)

and everything the flush does joins that trace: the database spans (`CommandTracer`) and the outbox's
publishes (the broker's middleware injects the flush span as their parent).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanKind
from opentelemetry.util.types import AttributeValue

#: links kept per batch span (a batch of thousands would make a span too large to export)
MAX_LINKS = 128


@contextlib.contextmanager
def batch_span(
    tracer: trace.Tracer,
    name: str,
    carriers: Iterable[Mapping[str, str]],
    *,
    attributes: Mapping[str, AttributeValue] | None = None,
) -> Iterator[trace.Span]:
    """The current span while the body runs: child of the first carrier's trace, linked to the others.

    `carriers` are the messages' properties (where `traceparent` travels). With no traced message the span
    is a child of the current span, if any.
    """
    parent: Context | None = None
    links: list[Link] = []
    for carrier in carriers:
        if "traceparent" not in carrier:
            continue
        extracted = propagate.extract(carrier)
        context = trace.get_current_span(extracted).get_span_context()
        if not context.is_valid:
            continue
        if parent is None:
            parent = extracted
        elif len(links) < MAX_LINKS:
            links.append(Link(context))
    with tracer.start_as_current_span(
        name, context=parent, kind=SpanKind.INTERNAL, links=links, attributes=attributes
    ) as span:
        yield span
