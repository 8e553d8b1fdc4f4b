"""OpenTelemetry tracing for one service process."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter


def configure_tracing(
    service: str, *, otlp_endpoint: str | None, exporter: SpanExporter | None = None
) -> TracerProvider:
    """A tracer provider named after the service; spans go to OTLP/HTTP when an endpoint is configured.

    Set as the global provider so FastStream's and FastAPI's instrumentation find it.
    """
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if exporter is None and otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=otlp_endpoint.rstrip("/") + "/v1/traces")
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider
