"""The HTTP app of ota: its API, the operational endpoints, the service's life bound to the app's lifespan."""

from __future__ import annotations

from fastapi import FastAPI
from prometheus_client import REGISTRY, CollectorRegistry

from fleet_ota.bootstrap import SERVICE, Ota
from fleet_shared.service import build_app


def create_app(service: Ota, *, registry: CollectorRegistry = REGISTRY) -> FastAPI:
    app = build_app(
        SERVICE,
        service,
        routers=service.routers(),
        registry=registry,
        description="Firmware catalog, staged releases per data-center region, per-device upgrades.",
        drain_timeout_s=service.settings.shutdown_timeout_s,
    )
    service.clients.api_security.install(app)
    return app
