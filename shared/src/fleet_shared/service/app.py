"""One way to build a service's HTTP app: its life bound to the app's lifespan, operational endpoints, errors
as problem+json, request ids and server spans. `run_service` (runner.py) runs it.

A service hands `build_app` its *lifecycle*: the object `bootstrap()` returns, with

    async def start(self) -> None          # database ready, bus connected, then consume
    async def stop(self) -> None           # flush producers, close clients (after any drain)
    def readiness_checks(self) -> Mapping[str, ReadinessCheck]   # {"bus": ..., "database": ...}

and, when it consumes a stream, also (`Drains`)

    async def stop_consuming(self) -> None # no new messages
    async def drain(self) -> None          # finish and ack what is in flight; cancelled after drain_timeout_s

Adopting it (status, as an example; ingest and tuya-sim alike):

    # entrypoints/app.py
    def create_app(service: Status, *, registry: CollectorRegistry = REGISTRY) -> FastAPI:
        return build_app(
            "status", service, routers=[api_router(...)], registry=registry,
            description="Device shadows ...", drain_timeout_s=service.settings.shutdown_timeout_s,
        )
    # __main__.py
    run_service(SERVICE, StatusSettings(), lambda settings: create_app(bootstrap(settings)))
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Protocol, runtime_checkable

from fastapi import APIRouter, FastAPI
from fastapi.telemetry import TelemetryConfig
from prometheus_client import REGISTRY, CollectorRegistry

from .http import ReadinessCheck, operations_router
from .problems import install_problem_handlers
from .requests import RequestContextMiddleware

log = logging.getLogger(__name__)

# FastAPI's own OpenTelemetry layer (since 0.16x, on by itself once a tracer provider is set) stays off: its
# server span records the raw `url.path` and `url.query` (a refresh token on tuya-sim, ids) and is a second
# SERVER span beside the kit's, not around it: a sibling under the caller's span, or without `traceparent` a
# trace of its own with nothing in it. Its log records may carry rejected input values. The kit's server span
# (`requests.py`), Prometheus metrics and JSON logs cover the same ground.
NO_FASTAPI_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}


class Lifecycle(Protocol):
    """What runs beside the HTTP server of one service process."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def readiness_checks(self) -> Mapping[str, ReadinessCheck]: ...


@runtime_checkable
class Drains(Protocol):
    """A lifecycle that consumes: on shutdown it stops taking work, then finishes what it holds."""

    async def stop_consuming(self) -> None: ...

    async def drain(self) -> None: ...


class ServiceLife:
    """One app's lifespan: start; on shutdown: not ready any more, stop consuming, drain (bounded), stop."""

    def __init__(self, name: str, lifecycle: Lifecycle, drain_timeout_s: float) -> None:
        self.name = name
        self.lifecycle = lifecycle
        self.drain_timeout_s = drain_timeout_s
        self.draining = False

    @contextlib.asynccontextmanager
    async def lifespan(self, _: FastAPI) -> AsyncIterator[None]:
        try:
            await self.lifecycle.start()
        except BaseException:
            # close whatever did start (clients, connections) before the failure is reported
            with contextlib.suppress(Exception):
                await self.lifecycle.stop()
            raise
        log.info("%s started", self.name)
        try:
            yield
        finally:
            self.draining = True
            try:
                await self._drain()
            finally:
                await self.lifecycle.stop()
                log.info("%s stopped", self.name)

    async def _drain(self) -> None:
        if not isinstance(self.lifecycle, Drains):
            return
        await self.lifecycle.stop_consuming()
        try:
            async with asyncio.timeout(self.drain_timeout_s):
                await self.lifecycle.drain()
        except TimeoutError:
            # what is not acked is redelivered to the next consumer: late, not lost
            log.warning(
                "%s: in-flight work not finished within %.1fs, stopping anyway",
                self.name,
                self.drain_timeout_s,
            )


def build_app(
    name: str,
    lifecycle: Lifecycle,
    *,
    routers: Sequence[APIRouter] = (),
    registry: CollectorRegistry = REGISTRY,
    title: str | None = None,
    description: str = "",
    version: str = "0.1.0",
    drain_timeout_s: float = 15.0,
) -> FastAPI:
    """The FastAPI app of service `name`: `/healthz`, `/readyz`, `/metrics`, `/docs`, then `routers`."""
    life = ServiceLife(name, lifecycle, drain_timeout_s)
    app = FastAPI(
        title=title or f"tuya-fleet {name}",
        description=description,
        version=version,
        lifespan=life.lifespan,
        telemetry=NO_FASTAPI_TELEMETRY,
    )
    app.state.service_life = life
    install_problem_handlers(app)
    app.add_middleware(RequestContextMiddleware, service=name, registry=registry)
    app.include_router(
        operations_router(lifecycle.readiness_checks(), registry=registry, draining=lambda: life.draining)
    )
    for router in routers:
        app.include_router(router)
    return app
