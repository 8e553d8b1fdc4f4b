"""OpenTelemetry tracing for one service process: where spans go, and which are recorded at all.

- Zipkin (the local stack's trace viewer) when `FLEET_ZIPKIN_ENDPOINT` or OpenTelemetry's own
  `OTEL_EXPORTER_ZIPKIN_ENDPOINT` is set (`devstack env` and `./dev up` set it): the v2 JSON spans URL.
- OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (compose and Kubernetes: Jaeger or any collector).
- Both when both are set.

Sampling is OpenTelemetry's standard `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` (`always_on`,
`always_off`, `traceidratio`, `parentbased_always_on`, `parentbased_always_off`, `parentbased_traceidratio`;
the argument is the ratio, 0 to 1), checked at start: a misspelt sampler is an error, not a silent fallback.
Unset, the default depends on export:

- an exporter is configured: `parentbased_traceidratio` at `DEFAULT_SAMPLER_RATIO` (5%, or
  `OTEL_TRACES_SAMPLER_ARG` alone when set). A trace is decided once, where it starts: at ingest for a device
  message, at the HTTP server for a request without `traceparent`; every hop downstream follows its parent's
  decision, so a sampled trace is whole and an unsampled one costs non-recording spans only. Recording every
  trace halved status's throughput at 5,000 reports/s; set `always_on` where each action must leave a trace
  (the trace e2e does). An explicit `*traceidratio` without an argument keeps the SDK's ratio, 1.0;
- none is: `parentbased_always_off`. Nobody would read the spans, so a trace started here (a consumed message
  without `traceparent`, a request without one) is not recorded: the broker's middleware, the server span and
  the database listener then make non-recording spans only, which cost a fraction of a recorded one (see the
  README's configuration table). Trace and span ids are still made, so log lines still carry `trace_id` and
  the context still travels to the next service; a caller's sampled trace is still honoured.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from fleet_shared.tracing.provider import ServiceTracerProvider

#: the sampler and ratio a service runs with when `OTEL_TRACES_SAMPLER` is unset and spans are exported;
#: compose, the chart's values and the local stack set the same (`sampling_env`)
DEFAULT_SAMPLER = "parentbased_traceidratio"
DEFAULT_SAMPLER_RATIO = 0.05

SamplerName = Literal[
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
]


class TracingSettings(BaseSettings):
    """The exporter endpoints and the sampler every service reads from its environment."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    zipkin_endpoint: str | None = Field(
        None, validation_alias=AliasChoices("FLEET_ZIPKIN_ENDPOINT", "OTEL_EXPORTER_ZIPKIN_ENDPOINT")
    )
    traces_sampler: SamplerName | None = Field(None, validation_alias="OTEL_TRACES_SAMPLER")
    # the ratio of the `traceidratio` samplers (the SDK's default when unset: 1.0)
    traces_sampler_arg: float | None = Field(None, ge=0.0, le=1.0, validation_alias="OTEL_TRACES_SAMPLER_ARG")

    @field_validator("traces_sampler", "traces_sampler_arg", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        # as the SDK reads them: case does not matter, an empty variable is an unset one
        if isinstance(value, str):
            return value.strip().lower() or None
        return value


def configure_tracing(
    service: str,
    *,
    otlp_endpoint: str | None = None,
    zipkin_endpoint: str | None = None,
    exporter: SpanExporter | None = None,
    settings: TracingSettings | None = None,
) -> TracerProvider:
    """`tracer_provider(...)` set as the global provider, so the broker's middleware, the HTTP server spans,
    the Tuya client and the database listener find it."""
    provider = tracer_provider(
        service,
        otlp_endpoint=otlp_endpoint,
        zipkin_endpoint=zipkin_endpoint,
        exporter=exporter,
        settings=settings,
    )
    trace.set_tracer_provider(provider)
    return provider


def tracer_provider(
    service: str,
    *,
    otlp_endpoint: str | None = None,
    zipkin_endpoint: str | None = None,
    exporter: SpanExporter | None = None,
    settings: TracingSettings | None = None,
) -> TracerProvider:
    """A tracer provider named after the service, exporting to every configured backend, sampling as set.

    `settings` None: from the environment (`TracingSettings`: the Zipkin endpoint unless `zipkin_endpoint`
    is given, the sampler).
    """
    settings = settings or TracingSettings()
    exporters = span_exporters(otlp_endpoint, zipkin_endpoint or settings.zipkin_endpoint, exporter)
    provider = ServiceTracerProvider(
        exports_spans=bool(exporters),
        resource=Resource.create({"service.name": service}),
        sampler=sampler_of(settings, exporting=bool(exporters)),
    )
    for each in exporters:
        provider.add_span_processor(BatchSpanProcessor(each))
    return provider


def sampler_of(settings: TracingSettings, *, exporting: bool) -> Sampler:
    """The sampler `OTEL_TRACES_SAMPLER` names; unset: a ratio of the traces started here (and every trace
    a caller sampled) when spans are exported, else only the traces a caller sampled (module docstring)."""
    name = settings.traces_sampler or (DEFAULT_SAMPLER if exporting else "parentbased_always_off")
    ratio = settings.traces_sampler_arg
    if ratio is None:
        ratio = 1.0 if settings.traces_sampler else DEFAULT_SAMPLER_RATIO
    root: Sampler = {"always_on": ALWAYS_ON, "always_off": ALWAYS_OFF}.get(
        name.removeprefix("parentbased_"), TraceIdRatioBased(ratio)
    )
    return ParentBased(root) if name.startswith("parentbased_") else root


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


def sampling_env(environ: Mapping[str, str]) -> dict[str, str]:
    """`OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` for a service started from `environ`: those set
    there, the defaults for the others (the local stack spells them out, so its services' environment
    shows them). A sampler named there without an argument keeps the SDK's ratio."""
    sampler = environ.get("OTEL_TRACES_SAMPLER", "").strip()
    arg = environ.get("OTEL_TRACES_SAMPLER_ARG", "").strip()
    if not sampler:
        sampler, arg = DEFAULT_SAMPLER, arg or str(DEFAULT_SAMPLER_RATIO)
    return {"OTEL_TRACES_SAMPLER": sampler, **({"OTEL_TRACES_SAMPLER_ARG": arg} if arg else {})}
