"""Tracing shared by every service: the id attributes `fleet trace` finds, database spans, batch spans, and
the trace viewer's query API (Zipkin).

Where spans come from without a service doing anything: the HTTP server span (`service.requests`), the
broker's publish and consume spans (`pulsar.opentelemetry`, on by default), the Tuya OpenAPI client span
(`tuya.openapi`), database spans (`CommandTracer`, registered by `fleet_shared.mongo.connect`). Export is
set up by `service.telemetry.configure_tracing`.
"""

from .attributes import BATCH_ID, DEVICE_ID, ID_ATTRIBUTES, RELEASE_ID, key_attributes, tag_span
from .batch import batch_span
from .mongo import CommandTracer

__all__ = [
    "BATCH_ID",
    "DEVICE_ID",
    "ID_ATTRIBUTES",
    "RELEASE_ID",
    "CommandTracer",
    "batch_span",
    "key_attributes",
    "tag_span",
]
