"""The operational HTTP endpoints every service serves: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

ReadinessCheck = Callable[[], Awaitable[bool]]


def operations_router(
    checks: Mapping[str, ReadinessCheck],
    *,
    registry: CollectorRegistry = REGISTRY,
    timeout: float = 2.0,
    draining: Callable[[], bool] | None = None,
) -> APIRouter:
    """`/healthz` (the process serves requests), `/readyz` (every dependency answers), `/metrics`.

    While `draining()` is true (the process is shutting down) `/readyz` answers 503 so no new work is routed
    here, whatever the checks say.
    """
    router = APIRouter(tags=["operations"])

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz")
    async def readyz() -> JSONResponse:
        results = await asyncio.gather(*(_probe(check, timeout) for check in checks.values()))
        report = dict(zip(checks, results, strict=True))
        body: dict[str, object] = {"ready": all(results), "checks": report}
        if draining is not None and draining():
            body.update(ready=False, draining=True)
        return JSONResponse(body, status_code=200 if body["ready"] else 503)

    @router.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router


async def _probe(check: ReadinessCheck, limit: float) -> bool:
    try:
        async with asyncio.timeout(limit):
            return await check()
    except Exception:  # any failure of a dependency means "not ready", reported as false
        return False
