"""The HTTP app: the pairing API and the operational endpoints, the service's life bound to the lifespan."""

from __future__ import annotations

from fastapi import FastAPI
from prometheus_client import REGISTRY, CollectorRegistry

from fleet_pairing.bootstrap import SERVICE, Pairing
from fleet_pairing.entrypoints.http import ApiPorts, api_router
from fleet_pairing.views import PairingViews
from fleet_shared.service import build_app


def api_ports(service: Pairing) -> ApiPorts:
    return ApiPorts(
        sessions=service.sessions,
        queries=PairingViews(service.sessions),
        tuya=service.tuya,
        clock=service.clock,
        ids=service.ids,
        render_qr=service.render_qr,
        default_lifetime=service.default_lifetime,
        max_expected_devices=service.settings.pairing_max_expected_devices,
    )


def create_app(service: Pairing, *, registry: CollectorRegistry = REGISTRY) -> FastAPI:
    security = service.clients.api_security
    app = build_app(
        SERVICE,
        service,
        routers=[api_router(api_ports(service), security)],
        registry=registry,
        description="Pairing sessions: Tuya tokens, QR payloads, per-device outcomes, binding modes.",
        drain_timeout_s=service.settings.pairing_shutdown_timeout_s,
    )
    security.install(app)
    return app
