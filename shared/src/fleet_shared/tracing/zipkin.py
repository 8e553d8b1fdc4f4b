"""Reading the trace viewer (Zipkin's v2 API): the recent traces tagged with an id, as span trees.

`fleet trace` and the trace e2e test read traces through this; Zipkin's span JSON: `traceId`, `id`,
`parentId`, `name`, `kind`, `timestamp` and `duration` (microseconds), `localEndpoint.serviceName`, `tags`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from .attributes import ID_ATTRIBUTES

ENV_ZIPKIN_URL = "FLEET_ZIPKIN_URL"
DEFAULT_ZIPKIN_URL = "http://127.0.0.1:9411"

Span = Mapping[str, Any]


class ZipkinError(Exception):
    """The trace viewer could not be reached or refused the query."""


def zipkin_url(env: Mapping[str, str] | None = None) -> str:
    """`FLEET_ZIPKIN_URL`, else the local stack's viewer (in a checkout), else Zipkin's usual port."""
    env = os.environ if env is None else env
    if env.get(ENV_ZIPKIN_URL):
        return env[ENV_ZIPKIN_URL].rstrip("/")
    try:
        from fleet_devstack.config import StackConfig
    except ImportError:
        return DEFAULT_ZIPKIN_URL
    try:
        url: str = StackConfig.load(env.get("FLEET_STACK")).zipkin_url
    except RuntimeError:  # installed outside a checkout
        return DEFAULT_ZIPKIN_URL
    return url


class ZipkinQuery:
    """Queries of one Zipkin server's API."""

    def __init__(self, base_url: str, http: httpx.Client | None = None, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = http or httpx.Client(timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def traces(
        self,
        *,
        tag: tuple[str, str] | None = None,
        service: str | None = None,
        lookback_ms: int = 3_600_000,
        limit: int = 10,
    ) -> list[list[dict[str, Any]]]:
        """Recent traces with a span tagged `(key, value)` and/or from `service`; each a list of spans."""
        params: dict[str, str | int] = {"lookback": lookback_ms, "limit": limit}
        if tag is not None:
            params["annotationQuery"] = f"{tag[0]}={tag[1]}"
        if service is not None:
            params["serviceName"] = service
        body = self._get("/api/v2/traces", params)
        if not isinstance(body, list):
            raise ZipkinError(f"unexpected answer from {self.base_url}: {str(body)[:200]}")
        return [list(t) for t in body]

    def traces_of(self, entity_id: str, *, lookback_ms: int, limit: int) -> list[list[dict[str, Any]]]:
        """Traces tagged with `entity_id` as a device, batch or release id, newest first, without repeats."""
        found: dict[str, list[dict[str, Any]]] = {}
        for attribute in ID_ATTRIBUTES:
            for spans in self.traces(tag=(attribute, entity_id), lookback_ms=lookback_ms, limit=limit):
                if spans:
                    found.setdefault(spans[0]["traceId"], spans)
        newest = sorted(found.values(), key=started_us, reverse=True)
        return newest[:limit]

    def trace(self, trace_id: str) -> list[dict[str, Any]]:
        body = self._get(f"/api/v2/trace/{trace_id}", {})
        return list(body) if isinstance(body, list) else []

    def _get(self, path: str, params: Mapping[str, str | int]) -> Any:
        try:
            response = self._http.get(self.base_url + path, params=dict(params))
        except httpx.HTTPError as e:
            raise ZipkinError(f"trace viewer at {self.base_url} unreachable: {type(e).__name__}") from None
        if response.status_code == 404 and path.startswith("/api/v2/trace/"):
            return []
        if response.status_code != 200:
            raise ZipkinError(f"trace viewer answered HTTP {response.status_code}: {response.text[:200]}")
        return response.json()


# -- trees ------------------------------------------------------------------------------------------------


@dataclass
class SpanNode:
    span: Span
    children: list[SpanNode] = field(default_factory=list)

    @property
    def service(self) -> str:
        return service_of(self.span)

    def walk(self) -> Iterable[SpanNode]:
        yield self
        for child in self.children:
            yield from child.walk()


def service_of(span: Span) -> str:
    return str((span.get("localEndpoint") or {}).get("serviceName") or "?")


def failed(span: Span) -> bool:
    tags = span.get("tags") or {}
    return "error" in tags or tags.get("otel.status_code") == "ERROR"


def started_us(spans: Sequence[Span]) -> int:
    return min((int(s.get("timestamp") or 0) for s in spans), default=0)


def span_tree(spans: Iterable[Span]) -> list[SpanNode]:
    """The spans of one trace as trees: roots are spans whose parent is not in the trace (the true root,
    and spans whose parent was not exported); children in start order."""
    nodes = {str(s["id"]): SpanNode(s) for s in spans}
    roots: list[SpanNode] = []
    for node in nodes.values():
        parent = nodes.get(str(node.span.get("parentId") or ""))
        (parent.children if parent is not None and parent is not node else roots).append(node)
    for node in nodes.values():
        node.children.sort(key=lambda n: int(n.span.get("timestamp") or 0))
    roots.sort(key=lambda n: int(n.span.get("timestamp") or 0))
    return roots


def services_in(spans: Iterable[Span]) -> set[str]:
    return {service_of(s) for s in spans}
