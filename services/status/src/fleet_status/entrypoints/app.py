"""The HTTP app: the status API, operations endpoints, and the service's life bound to the app's lifespan."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI
from prometheus_client import REGISTRY, CollectorRegistry

from fleet_shared.service import operations_router
from fleet_status.bootstrap import Status
from fleet_status.entrypoints.http import api_router

log = logging.getLogger(__name__)


def create_app(service: Status, *, registry: CollectorRegistry = REGISTRY) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await service.start()
        log.info("status started", extra={"database": service.settings.status_database})
        try:
            yield
        finally:
            await service.stop()
            log.info("status stopped")

    app = FastAPI(
        title="tuya-fleet status",
        description="Device shadows (presence, typed DPs, binding, firmware), DP history, presence timeline.",
        lifespan=lifespan,
    )
    app.include_router(
        api_router(service.views, service.keys, set_inactivity_timeout=service.set_inactivity_timeout)
    )
    app.include_router(
        operations_router(
            {"bus": service.bus_ready, "database": service.database_ready, "writer": service.writer_ready},
            registry=registry,
        )
    )
    return app
