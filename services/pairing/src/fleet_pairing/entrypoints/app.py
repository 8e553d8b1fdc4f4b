"""The HTTP app: the pairing API and the operational endpoints, the service's life bound to the lifespan."""

from __future__ import annotations

from fastapi import FastAPI
from prometheus_client import REGISTRY, CollectorRegistry

from fleet_pairing.bootstrap import SERVICE, Pairing
from fleet_pairing.entrypoints.http import api_router
from fleet_shared.service import build_app


def create_app(service: Pairing, *, registry: CollectorRegistry = REGISTRY) -> FastAPI:
    app = build_app(
        SERVICE,
        service,
        routers=[api_router(service)],
        registry=registry,
        description="Pairing sessions: Tuya tokens, QR payloads, per-device outcomes, binding modes.",
        drain_timeout_s=service.settings.pairing_shutdown_timeout_s,
    )
    service.security.security.install(app)
    return app
