"""OpenTelemetry tracing for one service process: where spans go.

- Zipkin (the local stack's trace viewer) when `FLEET_ZIPKIN_ENDPOINT` or OpenTelemetry's own
  `OTEL_EXPORTER_ZIPKIN_ENDPOINT` is set (`devstack env` and `./dev up` set it): the v2 JSON spans URL.
- OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (compose and Kubernetes: Jaeger or any collector).
- Both when both are set; neither: spans still carry trace ids into logs and across services, unexported.

Sampling is the SDK's, from `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` (default: parent-based,
always on).
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class TracingSettings(BaseSettings):
    """The exporter endpoints every service reads from its environment."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    zipkin_endpoint: str | None = Field(
        None, validation_alias=AliasChoices("FLEET_ZIPKIN_ENDPOINT", "OTEL_EXPORTER_ZIPKIN_ENDPOINT")
    )


def configure_tracing(
    service: str,
    *,
    otlp_endpoint: str | None = None,
    zipkin_endpoint: str | None = None,
    exporter: SpanExporter | None = None,
) -> TracerProvider:
    """A tracer provider named after the service, exporting to every configured backend.

    `zipkin_endpoint` None: from the environment (`TracingSettings`). Set as the global provider so the
    broker's middleware, the HTTP server spans, the Tuya client and the database listener find it.
    """
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    for each in span_exporters(otlp_endpoint, zipkin_endpoint or TracingSettings().zipkin_endpoint, exporter):
        provider.add_span_processor(BatchSpanProcessor(each))
    trace.set_tracer_provider(provider)
    return provider


def span_exporters(otlp: str | None, zipkin: str | None, given: SpanExporter | None) -> list[SpanExporter]:
    """`given`, then OTLP/HTTP to `otlp`, then Zipkin JSON to `zipkin` (the v2 spans URL), as configured."""
    exporters: list[SpanExporter] = [] if given is None else [given]
    if otlp:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporters.append(OTLPSpanExporter(endpoint=otlp.rstrip("/") + "/v1/traces"))
    if zipkin:
        from opentelemetry.exporter.zipkin.json import ZipkinExporter

        exporters.append(ZipkinExporter(endpoint=zipkin))
    return exporters
