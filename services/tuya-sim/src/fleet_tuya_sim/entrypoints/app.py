"""The HTTP app: Tuya's OpenAPI subset, the `/sim` control API, health, and the simulator's life bound to
the app's lifespan. Errors on Tuya paths use Tuya's envelope (HTTP 200, `success:false`), errors on `/sim`
plain HTTP statuses."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from fleet_shared.service import operations_router
from fleet_tuya_sim.bootstrap import TuyaSim
from fleet_tuya_sim.domain import errors
from fleet_tuya_sim.domain.errors import CloudRefusal
from fleet_tuya_sim.domain.project import AccessRefused
from fleet_tuya_sim.entrypoints import control, openapi, unbinding

SYSTEM_ERROR = 500
log = logging.getLogger(__name__)


def _is_control(request: Request) -> bool:
    return request.url.path.startswith("/sim")


def create_app(service: TuyaSim) -> FastAPI:
    simulator = service.simulator
    control_token = service.settings.control_token

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        log.info("tuya-sim started")
        try:
            yield
        finally:
            await service.stop()
            log.info("tuya-sim stopped")

    app = FastAPI(title="tuya-sim", summary="A stand-in for Tuya's cloud", lifespan=lifespan)
    app.state.simulator = simulator
    app.state.gate = service.gate
    app.state.control_token = control_token.get_secret_value() if control_token else None

    @app.exception_handler(AccessRefused)
    async def _access_refused(request: Request, exc: AccessRefused) -> Response:
        return openapi.envelope_error(exc.code, exc.msg, simulator.now_ms())

    @app.exception_handler(CloudRefusal)
    async def _refused(request: Request, exc: CloudRefusal) -> Response:
        if _is_control(request):
            status = 404 if exc.code == errors.DEVICE_NOT_EXIST else 409
            return JSONResponse({"code": exc.code, "msg": exc.msg}, status_code=status)
        return openapi.envelope_error(exc.code, exc.msg, simulator.now_ms())

    @app.exception_handler(LookupError)
    async def _no_fleet(request: Request, exc: LookupError) -> Response:
        if _is_control(request):
            return JSONResponse({"detail": str(exc)}, status_code=409)
        return openapi.envelope_error(SYSTEM_ERROR, "system error", simulator.now_ms())

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        if _is_control(request):
            return JSONResponse({"detail": exc.errors()}, status_code=422)
        return openapi.envelope_error(errors.PARAM_ILLEGAL, "param illegal", simulator.now_ms())

    checks = {"fleet": service.fleet_ready, "publisher": service.publisher_ready}
    if service.broker is not None:
        checks["bus"] = service.bus_ready
    app.include_router(operations_router(checks))
    app.include_router(control.router)
    app.include_router(unbinding.router)
    app.include_router(openapi.router)

    @app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"], include_in_schema=False)
    async def _unknown(path: str) -> Response:
        return openapi.envelope_error(openapi.URI_PATH_INVALID, "uri path invalid", simulator.now_ms())

    return app
