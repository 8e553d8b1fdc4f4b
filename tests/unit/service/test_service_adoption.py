"""status and ingest are built on the service kit: each one's app (never started here, so no server is asked
for anything but readiness) serves the kit's operational endpoints with the service's own readiness checks,
its lifecycle drains, and status's API answers 401 problem+json without a credential."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from fleet_ingest.bootstrap import bootstrap as bootstrap_ingest
from fleet_ingest.entrypoints.app import create_app as ingest_app
from fleet_ingest.settings import IngestSettings
from fleet_shared.service import Drains
from fleet_status.bootstrap import bootstrap as bootstrap_status
from fleet_status.entrypoints.app import create_app as status_app
from fleet_status.settings import StatusSettings

pytestmark = pytest.mark.unit

# nothing listens here: readiness checks fail fast and report false
NOWHERE = {
    "FLEET_PULSAR_URL": "pulsar://127.0.0.1:9",
    "FLEET_MONGODB_URI": "mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=500",
}


@pytest.fixture(autouse=True)
def nowhere(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in NOWHERE.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("FLEET_TUYA_ACCESS_SECRET", raising=False)
    monkeypatch.delenv("FLEET_OIDC_ISSUER", raising=False)


def test_status_app_is_the_kits_with_its_checks_and_a_protected_api() -> None:
    registry = CollectorRegistry()
    service = bootstrap_status(StatusSettings(), registry=registry)
    try:
        assert isinstance(service, Drains)
        client = TestClient(status_app(service, registry=registry))  # no `with`: the lifespan never runs
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert set(ready.json()["checks"]) == {"bus", "database", "writer"}
        assert "fleet_http_requests" in client.get("/metrics").text
        refused = client.get("/v1/devices")
        assert (refused.status_code, refused.headers["content-type"]) == (401, "application/problem+json")
        assert refused.headers["x-request-id"]  # the kit's request context is in front
        assert client.get("/docs").status_code == 200
    finally:
        service.clients.mongo_client.close()


def test_ingest_app_is_the_kits_with_its_checks() -> None:
    registry = CollectorRegistry()
    settings = IngestSettings(tuya_access_secret="0123456789abcdef01234567")
    ingest = bootstrap_ingest(settings, registry=registry)
    try:
        assert isinstance(ingest, Drains)
        client = TestClient(ingest_app(ingest, registry=registry))
        ready = client.get("/readyz")
        assert (ready.status_code, set(ready.json()["checks"])) == (503, {"bus", "tuya", "database"})
        assert client.get("/healthz").status_code == 200
    finally:
        getattr(ingest.mongo_client, "close")()  # noqa: B009 - typed `object` in Ingest
