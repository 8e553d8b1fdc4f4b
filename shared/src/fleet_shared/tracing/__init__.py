"""Tracing shared by every service: the id attributes `fleet trace` finds, database spans, batch spans, and
the trace viewer's query API (Zipkin).

Where spans come from without a service doing anything: the HTTP server span (`service.requests`), the
broker's publish and consume spans (`pulsar.opentelemetry`, on by default), the Tuya OpenAPI client span
(`tuya.openapi`), database spans (`CommandTracer`, registered by `fleet_shared.mongo.connect`). Export is
set up by `service.telemetry.configure_tracing`.

`CommandTracer` (which imports the MongoDB driver) and `batch_span` load on first use: the broker imports this
package for its span attributes, and a process that only uses the bus need not import a database driver.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .attributes import BATCH_ID, DEVICE_ID, ID_ATTRIBUTES, RELEASE_ID, key_attributes, tag_span

if TYPE_CHECKING:
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

_ON_FIRST_USE = {"CommandTracer": ".mongo", "batch_span": ".batch"}


def __getattr__(name: str) -> Any:
    if (module := _ON_FIRST_USE.get(name)) is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
