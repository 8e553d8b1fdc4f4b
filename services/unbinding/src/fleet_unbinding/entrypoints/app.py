"""The HTTP app: the unbinding API behind the security kit (audit of every state-changing call), the
operational endpoints, and the service's life (loops, clients) bound to the app's lifespan."""

from __future__ import annotations

from fastapi import FastAPI
from prometheus_client import REGISTRY, CollectorRegistry

from fleet_shared.service import build_app
from fleet_unbinding.bootstrap import SERVICE, Unbinding
from fleet_unbinding.entrypoints.http import api_router


def create_app(service: Unbinding, *, registry: CollectorRegistry = REGISTRY) -> FastAPI:
    app = build_app(
        SERVICE,
        service,
        routers=[api_router(service)],
        registry=registry,
        description="Governed batch unbinding of strongly bound devices: Tuya's authorization model, daily "
        "quotas per account and product, list / QR / wired modes, append-only records.",
        drain_timeout_s=service.settings.shutdown_timeout_s,
    )
    service.clients.api_security.install(app)
    return app
