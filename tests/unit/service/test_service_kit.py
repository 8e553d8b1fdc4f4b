"""The operational pieces every service shares."""

from __future__ import annotations

import logging

import orjson
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import TracerProvider

from fleet_shared.service import ServiceSettings, operations_router
from fleet_shared.service.logs import JsonFormatter

pytestmark = pytest.mark.unit


async def _up() -> bool:
    return True


async def _down() -> bool:
    raise ConnectionError("database unreachable")


def test_readyz_reports_each_dependency_and_fails_when_one_is_down() -> None:
    app = FastAPI()
    app.include_router(operations_router({"pulsar": _up, "mongodb": _down}))
    client = TestClient(app)
    assert client.get("/healthz").json() == {"status": "ok"}
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"ready": False, "checks": {"pulsar": True, "mongodb": False}}
    assert client.get("/metrics").status_code == 200


def test_json_log_line_carries_trace_ids_and_extra_fields() -> None:
    tracer = TracerProvider().get_tracer("test")
    record = logging.LogRecord("fleet", logging.INFO, __file__, 1, "shadow updated", None, None)
    record.device_id = "dev1"
    with tracer.start_as_current_span("handle") as span:
        line = orjson.loads(JsonFormatter("status").format(record))
    assert line["message"] == "shadow updated"
    assert line["service"] == "status"
    assert line["device_id"] == "dev1"
    assert line["trace_id"] == format(span.get_span_context().trace_id, "032x")


def test_settings_read_the_fleet_prefix_and_hide_the_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_PULSAR_URL", "pulsar://broker:6650")
    monkeypatch.setenv("FLEET_TUYA_ACCESS_SECRET", "s3cr3t-value-0123456789")
    settings = ServiceSettings()
    assert settings.pulsar_url == "pulsar://broker:6650"
    assert "s3cr3t" not in repr(settings)
    assert settings.tuya_access_secret.get_secret_value() == "s3cr3t-value-0123456789"
