"""`run_service`: what every service's `__main__` does after `prepare_process()`: JSON logs, tracing, the app,
the long-lived objects frozen out of the garbage collector's sight, then uvicorn until SIGTERM.

    def main() -> None:
        prepare_process()  # first: Motor sizes its thread pool when it is imported (see process.py)
        from fleet_pairing.bootstrap import SERVICE, bootstrap
        ...
        run_service(SERVICE, PairingSettings(), lambda settings: create_app(bootstrap(settings)))
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

import uvicorn
from fastapi import FastAPI

from .logs import configure_logging
from .process import freeze_long_lived, prepare_process
from .settings import ServiceSettings
from .telemetry import configure_tracing

S = TypeVar("S", bound=ServiceSettings)


def run_service(name: str, settings: S, make_app: Callable[[S], FastAPI]) -> None:
    """Configure logging and tracing first (so bootstrap's own lines are JSON and traced), then serve.

    Process settings (process.py): Motor's pool is sized here too when motor is not imported yet, and a pool
    already made with another size is logged as a warning; once the app is built (everything imported and
    wired) the objects alive are frozen out of the collector's sight, unless `gc_freeze` is off.

    SIGTERM: uvicorn stops accepting, lets in-flight requests finish (up to `shutdown_timeout_s`), then the
    app's lifespan drains and stops the service (see `build_app`); spans still buffered are flushed last.
    """
    configure_logging(name, level=settings.log_level, fmt=settings.log_format)
    provider = configure_tracing(name, otlp_endpoint=settings.otel_exporter_otlp_endpoint)
    prepare_process(settings)
    try:
        app = make_app(settings)
        freeze_long_lived(settings)
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
