"""Whether the spans made now go anywhere, so the hot paths can skip making the ones nobody would see."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import Sampler


class ServiceTracerProvider(TracerProvider):
    """The SDK's provider, knowing whether any exporter receives its spans (`service.telemetry` makes it)."""

    def __init__(self, *, exports_spans: bool, resource: Resource, sampler: Sampler) -> None:
        super().__init__(resource=resource, sampler=sampler)
        self.exports_spans = exports_spans


def spans_exported(provider: trace.TracerProvider | None = None) -> bool:
    """False when nothing can record or export: the API's proxy or no-op provider (none was set), or the
    service kit's provider configured without an exporter. Any other SDK provider is assumed to export."""
    provider = provider or global_provider()
    if isinstance(provider, ServiceTracerProvider):
        return provider.exports_spans
    return isinstance(provider, TracerProvider)


_environment_read = False


def global_provider() -> trace.TracerProvider | None:
    """The global tracer provider once one is set (by `trace.set_tracer_provider`, or named by the
    OTEL_PYTHON_TRACER_PROVIDER environment variable), else None.

    Until a provider is set, `trace.get_tracer_provider()` looks the variable up in `os.environ` on every
    call: asked for every message, that lookup cost more than the rest of the broker's tracing. Here the
    environment is asked once (through `get_tracer_provider`, which sets the provider it names); after that
    a provider can only come from `set_tracer_provider`, which sets the global read here (`tests/unit/service`
    pins that).
    """
    global _environment_read
    provider = trace._TRACER_PROVIDER
    if provider is None and not _environment_read:
        _environment_read = True
        trace.get_tracer_provider()
        provider = trace._TRACER_PROVIDER
    return provider
