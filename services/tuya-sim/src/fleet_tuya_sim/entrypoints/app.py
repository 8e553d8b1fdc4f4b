"""The HTTP app: Tuya's OpenAPI subset, the `/sim` control API, health. Errors on Tuya paths use Tuya's
envelope (HTTP 200, `success:false`), errors on `/sim` plain HTTP statuses."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from fleet_shared.service import operations_router
from fleet_tuya_sim.domain import errors
from fleet_tuya_sim.domain.errors import CloudRefusal
from fleet_tuya_sim.domain.project import AccessRefused
from fleet_tuya_sim.entrypoints import control, openapi
from fleet_tuya_sim.service_layer.gate import OpenApiGate
from fleet_tuya_sim.service_layer.simulator import Simulator

SYSTEM_ERROR = 500


def _is_control(request: Request) -> bool:
    return request.url.path.startswith("/sim")


def create_app(
    simulator: Simulator,
    gate: OpenApiGate,
    *,
    control_token: str | None = None,
    on_startup: Callable[[], object] | None = None,
    manage_simulator: bool = True,
) -> FastAPI:
    """`manage_simulator`: start the simulator (publisher, background ticks) with the app, close it after."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if manage_simulator:
            await simulator.start()
        if on_startup is not None:
            on_startup()
        try:
            yield
        finally:
            if manage_simulator:
                await simulator.close()

    app = FastAPI(title="tuya-sim", summary="A stand-in for Tuya's cloud", lifespan=lifespan)
    app.state.simulator = simulator
    app.state.gate = gate
    app.state.control_token = control_token

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

    async def fleet_ready() -> bool:
        return simulator.has_fleet

    async def publisher_running() -> bool:
        return simulator.running

    app.include_router(operations_router({"fleet": fleet_ready, "publisher": publisher_running}))
    app.include_router(control.router)
    app.include_router(openapi.router)

    @app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"], include_in_schema=False)
    async def _unknown(path: str) -> Response:
        return openapi.envelope_error(openapi.URI_PATH_INVALID, "uri path invalid", simulator.now_ms())

    return app
