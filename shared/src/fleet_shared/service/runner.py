"""`run_service`: what every service's `__main__` does: JSON logs, tracing, then uvicorn until SIGTERM."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

import uvicorn
from fastapi import FastAPI

from .logs import configure_logging
from .settings import ServiceSettings
from .telemetry import configure_tracing

S = TypeVar("S", bound=ServiceSettings)


def run_service(name: str, settings: S, make_app: Callable[[S], FastAPI]) -> None:
    """Configure logging and tracing first (so bootstrap's own lines are JSON and traced), then serve.

    SIGTERM: uvicorn stops accepting, lets in-flight requests finish (up to `shutdown_timeout_s`), then the
    app's lifespan drains and stops the service (see `build_app`); spans still buffered are flushed last.
    """
    configure_logging(name, level=settings.log_level, fmt=settings.log_format)
    provider = configure_tracing(name, otlp_endpoint=settings.otel_exporter_otlp_endpoint)
    try:
        app = make_app(settings)
        uvicorn.run(
            app,
            host=settings.http_host,
            port=settings.http_port,
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=math.ceil(settings.shutdown_timeout_s),
        )
    finally:
        provider.shutdown()
