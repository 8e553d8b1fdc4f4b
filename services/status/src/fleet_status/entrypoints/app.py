"""The HTTP app: the status API behind the security kit, on the service kit's app (operational endpoints,
problem+json, request ids; the service's life bound to the app's lifespan)."""

from __future__ import annotations

from fastapi import FastAPI
from prometheus_client import REGISTRY, CollectorRegistry

from fleet_shared.service import build_app
from fleet_status.bootstrap import SERVICE, Status
from fleet_status.entrypoints.http import api_router

# beyond the writer's own drain bound, so its warning (what will be redelivered) is logged before the cut
_DRAIN_MARGIN_S = 5.0


def create_app(service: Status, *, registry: CollectorRegistry = REGISTRY) -> FastAPI:
    security = service.clients.api_security
    app = build_app(
        SERVICE,
        service,
        routers=[api_router(service.views, security, set_inactivity_timeout=service.set_inactivity_timeout)],
        registry=registry,
        description="Device shadows (presence, typed DPs, binding, firmware), DP history, presence timeline.",
        drain_timeout_s=service.settings.status_shutdown_timeout_s + _DRAIN_MARGIN_S,
    )
    security.install(app)
    return app
