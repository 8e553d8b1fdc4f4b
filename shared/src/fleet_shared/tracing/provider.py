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
    provider = provider or trace.get_tracer_provider()
    if isinstance(provider, ServiceTracerProvider):
        return provider.exports_spans
    return isinstance(provider, TracerProvider)
