"""Per request: an id (echoed as `X-Request-ID`, in every log line), a server span joined to the caller's
trace (W3C `traceparent`), Prometheus counters by route, and the 500 problem for an unhandled error.

The span and the counters name the route's template (`/v1/devices/{device_id}`, `http.route`), never the raw
path: a path can carry a credential (Tuya's `/v1.0/token/{refresh_token}`, served by tuya-sim) or ids nobody
asked to trace by. A path with every parameter redacted would be the template again, so `url.path` is not
recorded at all; a path parameter named `device_id`, `batch_id` or `release_id` becomes the id attribute
`fleet trace` searches (`fleet.device_id`, ...), and no other parameter is recorded. Everything the request
runs (dependencies such as the API-key lookup, the handler, its database commands) runs inside this
middleware's call with the server span current, so their spans are its children.

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

from fleet_shared.tracing.attributes import tag_span

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
            with contextlib.nullcontext() if quiet else _server_span(scope, method) as span:
                try:
                    await self.app(scope, receive, send_with_id)
                except Exception:
                    # the id also as a field: handlers that format later (after the context) keep it
                    log.exception(
                        "unhandled error in %s %s", method, _route_of(scope), extra={"request_id": request_id}
                    )
                    if started:
                        raise
                    await unexpected_error(request_id)(scope, receive, send_with_id)
                finally:
                    if span is not None:
                        _name_by_route(span, scope, method, status)
        finally:
            route = _route_of(scope)
            self.metrics.requests.labels(self.service, method, route, str(status)).inc()
            self.metrics.seconds.labels(self.service, method, route).observe(time.perf_counter() - began)
            request_id_var.reset(token)


def _server_span(scope: Scope, method: str) -> contextlib.AbstractContextManager[trace.Span]:
    """The request's span, current while the app runs: named by the method alone until routing has found the
    route's template (OpenTelemetry's HTTP conventions)."""
    carrier = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope.get("headers", ())}
    return _tracer.start_as_current_span(
        method,
        context=propagate.extract(carrier),
        kind=trace.SpanKind.SERVER,
        attributes={"http.request.method": method, "url.scheme": str(scope.get("scheme") or "http")},
    )


def _name_by_route(span: trace.Span, scope: Scope, method: str, status: int) -> None:
    template = getattr(scope.get("route"), "path", None)
    if isinstance(template, str):  # an unmatched path keeps the method alone as the name
        span.update_name(f"{method} {template}")
        span.set_attribute("http.route", template)
        # the ids `fleet trace` finds a request by, from the path parameters of those names only
        params = scope.get("path_params") or {}
        tag_span(
            span,
            device_id=_text(params.get("device_id")),
            batch_id=_text(params.get("batch_id")),
            release_id=_text(params.get("release_id")),
        )
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_status(trace.StatusCode.ERROR)


def _text(value: object) -> str | None:
    return str(value) if value is not None else None


def _route_of(scope: Scope) -> str:
    """The route's template (`/v1/devices/{device_id}`): ids never become label values."""
    route = scope.get("route")
    template = getattr(route, "path", None)
    if isinstance(template, str):
        return template
    return scope["path"] if scope.get("path") in QUIET_PATHS else "unmatched"
