"""Per request: an id (echoed as `X-Request-ID`, in every log line), a server span joined to the caller's
trace (W3C `traceparent`), Prometheus counters by route, and the 500 problem for an unhandled error.

A plain ASGI middleware, not Starlette's `BaseHTTPMiddleware`, so streamed responses pass through untouched.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import time
import uuid
import weakref
from dataclasses import dataclass

from opentelemetry import propagate, trace
from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .problems import unexpected_error

REQUEST_ID_HEADER = "x-request-id"
# the operational endpoints are polled every few seconds: counted, but no span and no log line
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("fleet_request_id", default=None)

_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
log = logging.getLogger(__name__)
_tracer = trace.get_tracer("fleet_shared.service")


@dataclass(frozen=True)
class HttpMetrics:
    requests: Counter
    seconds: Histogram


# one set of collectors per registry: an app built twice on the same registry must not register twice
_metrics_by_registry: weakref.WeakKeyDictionary[CollectorRegistry, HttpMetrics] = weakref.WeakKeyDictionary()


def http_metrics(registry: CollectorRegistry) -> HttpMetrics:
    if registry not in _metrics_by_registry:
        labels = ("service", "method", "route", "status")
        _metrics_by_registry[registry] = HttpMetrics(
            Counter("fleet_http_requests", "HTTP requests answered", labels, registry=registry),
            Histogram(
                "fleet_http_request_seconds",
                "HTTP request duration",
                ("service", "method", "route"),
                registry=registry,
            ),
        )
    return _metrics_by_registry[registry]


def request_id_of(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == REQUEST_ID_HEADER.encode():
            candidate = bytes(value).decode("latin-1")
            if _VALID_REQUEST_ID.match(candidate):
                return candidate
    return uuid.uuid4().hex


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, *, service: str, registry: CollectorRegistry) -> None:
        self.app = app
        self.service = service
        self.metrics = http_metrics(registry)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope)
        token = request_id_var.set(request_id)
        path: str = scope.get("path", "")
        method: str = scope.get("method", "GET")
        quiet = path in QUIET_PATHS
        status = 500
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = int(message["status"])
                message["headers"] = [
                    *message.get("headers", []),
                    (REQUEST_ID_HEADER.encode(), request_id.encode()),
                ]
            await send(message)

        began = time.perf_counter()
        try:
            with contextlib.nullcontext() if quiet else _server_span(scope, method, path) as span:
                try:
                    await self.app(scope, receive, send_with_id)
                except Exception:
                    # the id also as a field: handlers that format later (after the context) keep it
                    log.exception("unhandled error in %s %s", method, path, extra={"request_id": request_id})
                    if started:
                        raise
                    await unexpected_error(path, request_id)(scope, receive, send_with_id)
                if span is not None:
                    route = _route_of(scope)
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.route", route)
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_status(trace.StatusCode.ERROR)
        finally:
            route = _route_of(scope)
            self.metrics.requests.labels(self.service, method, route, str(status)).inc()
            self.metrics.seconds.labels(self.service, method, route).observe(time.perf_counter() - began)
            request_id_var.reset(token)


def _server_span(scope: Scope, method: str, path: str) -> contextlib.AbstractContextManager[trace.Span]:
    carrier = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope.get("headers", ())}
    return _tracer.start_as_current_span(
        f"{method} {path}",
        context=propagate.extract(carrier),
        kind=trace.SpanKind.SERVER,
        attributes={"http.request.method": method, "url.path": path},
    )


def _route_of(scope: Scope) -> str:
    """The route's template (`/v1/devices/{device_id}`): ids never become label values."""
    route = scope.get("route")
    template = getattr(route, "path", None)
    if isinstance(template, str):
        return template
    return scope["path"] if scope.get("path") in QUIET_PATHS else "unmatched"
