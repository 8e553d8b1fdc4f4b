"""Database client spans from pymongo's command monitoring, per OpenTelemetry's database conventions.

`fleet_shared.mongo.connect` registers `CommandTracer` on every client. A span is made only for a command run
inside a recorded span (an HTTP request, a consumed message, a traced batch, as sampled): the health checks'
pings, background chores and the work of unsampled traces make none, so a busy service pays for database spans
only where a trace asks for them (under a parent-based sampler a child of an unsampled span would not be
recorded anyway). Motor runs pymongo in worker threads with the caller's context copied, so the listener sees
the caller's span.

Only names go into spans (operation, collection, database, server): never a filter or a document, which may
hold what must not leave the service.
"""

from __future__ import annotations

import threading

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from pymongo import monitoring

DB_SYSTEM = "mongodb"


class CommandTracer(monitoring.CommandListener):
    """One CLIENT span per command: `{operation} {collection}` with `db.*` and `server.*` attributes."""

    def __init__(self, tracer_provider: trace.TracerProvider | None = None) -> None:
        self._tracer = trace.get_tracer("fleet_shared.mongo", tracer_provider=tracer_provider)
        self._spans: dict[tuple[int, object], trace.Span] = {}
        self._lock = threading.Lock()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if not trace.get_current_span().is_recording():
            return  # no recorded trace to join: no span (see the module's docstring)
        operation = event.command_name
        collection = event.command.get(operation)
        if not isinstance(collection, str):  # getMore names it apart; admin commands have none
            collection = event.command.get("collection")
        attributes: dict[str, str | int] = {
            "db.system": DB_SYSTEM,
            "db.system.name": DB_SYSTEM,
            "db.operation.name": operation,
            "db.namespace": event.database_name,
        }
        if isinstance(collection, str):
            attributes["db.collection.name"] = collection
        address = event.connection_id
        if isinstance(address, tuple):
            attributes["server.address"] = str(address[0])
            if address[1] is not None:
                attributes["server.port"] = int(address[1])
        name = f"{operation} {collection}" if isinstance(collection, str) else operation
        span = self._tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attributes)
        with self._lock:
            self._spans[(event.request_id, event.connection_id)] = span

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        span = self._pop(event)
        if span is not None:
            span.end()

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        span = self._pop(event)
        if span is None:
            return
        code = event.failure.get("code")
        if code is not None:
            span.set_attribute("db.response.status_code", str(code))
        span.set_attribute("error.type", str(event.failure.get("codeName") or "CommandFailed"))
        span.set_status(Status(StatusCode.ERROR))
        span.end()

    def _pop(
        self, event: monitoring.CommandSucceededEvent | monitoring.CommandFailedEvent
    ) -> trace.Span | None:
        with self._lock:
            return self._spans.pop((event.request_id, event.connection_id), None)
