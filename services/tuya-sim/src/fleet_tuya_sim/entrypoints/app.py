"""The HTTP app, built by the service kit (`build_app`: lifespan, /healthz, /readyz, /metrics, request ids,
server spans): Tuya's OpenAPI subset, the `/sim` control API and the simulator's life bound to the app's
lifespan. Errors on Tuya paths use Tuya's envelope (HTTP 200, `success:false`) as the SDKs expect, not the
kit's problem+json; errors on `/sim` plain HTTP statuses."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import REGISTRY, CollectorRegistry

from fleet_shared.service import build_app
from fleet_tuya_sim.bootstrap import SERVICE, TuyaSim
from fleet_tuya_sim.domain import errors
from fleet_tuya_sim.domain.errors import CloudRefusal
from fleet_tuya_sim.domain.project import AccessRefused
from fleet_tuya_sim.entrypoints import (
    control,
    openapi,
    openapi_clients,
    ota_control,
    pairing_control,
    unbinding,
)

SYSTEM_ERROR = 500


def _is_control(request: Request) -> bool:
    return request.url.path.startswith("/sim")


def create_app(service: TuyaSim, *, registry: CollectorRegistry = REGISTRY) -> FastAPI:
    simulator = service.simulator
    control_token = service.settings.control_token
    app = build_app(
        SERVICE,
        service,
        # the clients' routes first: `/v1.0/devices/factory-infos` before `/v1.0/devices/{device_id}`
        routers=[
            control.router,
            pairing_control.router,
            ota_control.router,
            unbinding.router,
            openapi_clients.router,
            openapi.router,
        ],
        registry=registry,
        title="tuya-sim",
        description="A stand-in for Tuya's cloud: OpenAPI subset, virtual devices, message push stream.",
        drain_timeout_s=service.settings.shutdown_timeout_s,
    )
    app.state.simulator = simulator
    app.state.gate = service.gate
    app.state.linked_app = service.linked_app
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

    @app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"], include_in_schema=False)
    async def _unknown(path: str) -> Response:
        return openapi.envelope_error(openapi.URI_PATH_INVALID, "uri path invalid", simulator.now_ms())

    return app
