"""The HTTP app: the service kit's operational endpoints (ingest has no API of its own), and the pipeline's
life bound to the app's lifespan."""

from __future__ import annotations

from fastapi import FastAPI
from prometheus_client import REGISTRY, CollectorRegistry

from fleet_ingest.bootstrap import SERVICE, Ingest
from fleet_shared.service import build_app

# beyond the pipeline's own grace, so it logs what is left unacked and closes its consumer before the cut
_DRAIN_MARGIN_S = 5.0


def create_app(ingest: Ingest, *, registry: CollectorRegistry = REGISTRY) -> FastAPI:
    return build_app(
        SERVICE,
        ingest,
        registry=registry,
        description="Tuya's message push stream, decrypted, deduplicated and published as device events.",
        drain_timeout_s=ingest.settings.ingest_shutdown_timeout_seconds + _DRAIN_MARGIN_S,
    )
