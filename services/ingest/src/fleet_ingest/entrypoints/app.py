"""The HTTP app: operations endpoints, and the pipeline's life bound to the app's lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI
from prometheus_client import REGISTRY, CollectorRegistry

from fleet_ingest.bootstrap import Ingest
from fleet_shared.service import operations_router

log = logging.getLogger(__name__)


def create_app(ingest: Ingest, *, registry: CollectorRegistry = REGISTRY) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await ingest.start_bus()
        consuming = asyncio.ensure_future(ingest.pipeline.run())
        log.info(
            "ingest started",
            extra={"tuya_topic": ingest.source.topic, "subscription": ingest.source.subscription},
        )
        try:
            yield
        finally:
            # Graceful: stop receiving, finish what is in flight, flush producers, close everything.
            await ingest.pipeline.stop(ingest.settings.ingest_shutdown_timeout_seconds)
            await consuming
            await ingest.close()
            log.info("ingest stopped")

    app = FastAPI(title="tuya-fleet ingest", lifespan=lifespan)
    app.include_router(
        operations_router(
            {"bus": ingest.bus_ready, "tuya": ingest.tuya_ready, "database": ingest.database_ready},
            registry=registry,
        )
    )
    return app
