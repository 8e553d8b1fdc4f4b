"""The app every service is built with: lifespan and drain, problem+json errors, request ids, metrics."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

import httpx
import orjson
import pytest
from fastapi import APIRouter, HTTPException
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, Field

from fleet_shared.service import ReadinessCheck, build_app
from fleet_shared.service.logs import JsonFormatter
from fleet_shared.service.requests import request_id_var

pytestmark = pytest.mark.unit

SECRET = "wifi-pass-0123456789-do-not-echo"


class Lifecycle:
    """Records what the app asks of it, in order."""

    def __init__(self, *, database_up: bool = True) -> None:
        self.calls: list[str] = []
        self.database_up = database_up

    async def start(self) -> None:
        self.calls.append("start")

    async def stop(self) -> None:
        self.calls.append("stop")

    def readiness_checks(self) -> Mapping[str, ReadinessCheck]:
        async def bus() -> bool:
            return True

        async def database() -> bool:
            if not self.database_up:
                raise ConnectionError("database unreachable")
            return True

        return {"bus": bus, "database": database}


class Consumer(Lifecycle):
    def __init__(self, drain_seconds: float = 0.0) -> None:
        super().__init__()
        self.drain_seconds = drain_seconds
        self.drained = False

    async def stop_consuming(self) -> None:
        self.calls.append("stop_consuming")

    async def drain(self) -> None:
        self.calls.append("drain")
        await asyncio.sleep(self.drain_seconds)
        self.drained = True


class WifiCredentials(BaseModel):
    ssid: str = Field(max_length=32)
    password: str = Field(max_length=8)


def routes() -> APIRouter:
    router = APIRouter()

    @router.post("/v1/pairing-tokens")
    async def make_token(body: WifiCredentials) -> dict[str, str]:
        return {"ssid": body.ssid}

    @router.get("/v1/devices/{device_id}")
    async def device(device_id: str) -> dict[str, str]:
        if device_id == "missing":
            raise HTTPException(404, f"no device {device_id}")
        if device_id == "boom":
            raise RuntimeError(f"driver failed, password={SECRET}")
        return {"device_id": device_id}

    @router.get("/v1/tokens/{refresh_token}/uses/{count}")
    async def token_uses(refresh_token: str, count: int) -> dict[str, str]:
        if refresh_token == "boom":
            raise RuntimeError("driver failed")
        raise HTTPException(404, "no such token")

    return router


def client(lifecycle: Lifecycle, **kwargs: float) -> TestClient:
    app = build_app("test", lifecycle, routers=[routes()], registry=CollectorRegistry(), **kwargs)
    return TestClient(app, raise_server_exceptions=False)


def test_invalid_body_is_a_problem_naming_the_field_without_echoing_the_value() -> None:
    with client(Lifecycle()) as http:
        response = http.post("/v1/pairing-tokens", json={"ssid": "home", "password": SECRET})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == 422
    assert body["title"] == "Unprocessable Entity"
    assert body["errors"] == [
        {
            "field": "body.password",
            "message": "String should have at most 8 characters",
            "type": "string_too_long",
        }
    ]
    assert SECRET not in response.text


def test_http_errors_are_problems() -> None:
    with client(Lifecycle()) as http:
        response = http.get("/v1/devices/missing")
        unknown = http.get("/v2/nothing")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json() == {
        "type": "about:blank",
        "title": "Not Found",
        "status": 404,
        "detail": "no device missing",
    }
    assert unknown.status_code == 404
    assert unknown.json()["title"] == "Not Found"


def test_problems_never_echo_the_request_path() -> None:
    """A path can carry a credential: no problem names it (`instance` is left out; RFC 9457 allows it)."""
    token = "refresh-0123456789abcdef-do-not-echo"
    with client(Lifecycle()) as http:
        answers = {
            "http error": http.get(f"/v1/tokens/{token}/uses/1?key={token}"),
            "invalid path parameter": http.get(f"/v1/tokens/{token}/uses/many"),
            "no route": http.get(f"/v2/tokens/{token}"),
            "wrong method": http.delete(f"/v1/tokens/{token}/uses/1"),
            "unhandled error": http.get("/v1/tokens/boom/uses/1"),
        }
    assert {k: r.status_code for k, r in answers.items()} == {
        "http error": 404,
        "invalid path parameter": 422,
        "no route": 404,
        "wrong method": 405,
        "unhandled error": 500,
    }
    for what, response in answers.items():
        assert response.headers["content-type"] == "application/problem+json", what
        assert "instance" not in response.json(), what
        assert token not in response.text, what
        assert "/v1/tokens" not in response.text, what
    assert answers["invalid path parameter"].json()["errors"][0]["field"] == "path.count"


def test_unhandled_error_is_a_500_saying_nothing_of_internals(caplog: pytest.LogCaptureFixture) -> None:
    with client(Lifecycle()) as http, caplog.at_level(logging.ERROR):
        response = http.get("/v1/devices/boom", headers={"X-Request-ID": "req-42"})
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["x-request-id"] == "req-42"
    body = response.json()
    assert body["title"] == "Internal Server Error"
    assert "req-42" in body["detail"]
    assert "instance" not in body
    assert "driver" not in response.text
    assert SECRET not in response.text
    # the log has the details, under the request id
    record = next(r for r in caplog.records if r.levelno == logging.ERROR)
    assert record.exc_info is not None
    assert orjson.loads(JsonFormatter("test").format(record))["request_id"] == "req-42"


def test_request_id_is_made_when_absent_or_unsafe_and_logged() -> None:
    seen: list[str | None] = []
    router = APIRouter()

    @router.get("/v1/echo")
    async def echo() -> dict[str, str]:
        seen.append(request_id_var.get())
        record = logging.LogRecord("fleet", logging.INFO, __file__, 1, "handled", None, None)
        return {"log": JsonFormatter("test").format(record)}

    app = build_app("test", Lifecycle(), routers=[router], registry=CollectorRegistry())
    with TestClient(app) as http:
        made = http.get("/v1/echo")
        unsafe = http.get("/v1/echo", headers={"X-Request-ID": "bad id\twith spaces"})
    assert len(made.headers["x-request-id"]) == 32
    assert orjson.loads(made.json()["log"])["request_id"] == made.headers["x-request-id"] == seen[0]
    assert unsafe.headers["x-request-id"] != "bad id\twith spaces"


def test_requests_are_counted_by_route_template_not_by_id() -> None:
    registry = CollectorRegistry()
    app = build_app("test", Lifecycle(), routers=[routes()], registry=registry)
    with TestClient(app) as http:
        http.get("/v1/devices/a")
        http.get("/v1/devices/b")
        metrics = http.get("/metrics").text
    labels = 'method="GET",route="/v1/devices/{device_id}",service="test",status="200"'
    assert f"fleet_http_requests_total{{{labels}}} 2.0" in metrics
    assert "/v1/devices/a" not in metrics
    # a second app on the same registry (tests build several) does not register the collectors twice
    build_app("test", Lifecycle(), registry=registry)


def test_lifespan_starts_then_stops_consuming_drains_and_stops_in_order() -> None:
    lifecycle = Consumer()
    with client(lifecycle) as http:
        assert lifecycle.calls == ["start"]
        assert http.get("/healthz").json() == {"status": "ok"}
        assert http.get("/readyz").json() == {"ready": True, "checks": {"bus": True, "database": True}}
    assert lifecycle.calls == ["start", "stop_consuming", "drain", "stop"]
    assert lifecycle.drained


def test_a_drain_that_outlasts_its_time_is_cut_and_the_service_still_stops() -> None:
    lifecycle = Consumer(drain_seconds=30)
    with client(lifecycle, drain_timeout_s=0.1):
        pass
    assert lifecycle.calls == ["start", "stop_consuming", "drain", "stop"]
    assert not lifecycle.drained


def test_a_lifecycle_without_drain_is_just_started_and_stopped() -> None:
    lifecycle = Lifecycle()
    with client(lifecycle):
        pass
    assert lifecycle.calls == ["start", "stop"]


def test_a_failed_start_closes_what_started_and_fails_the_app() -> None:
    class Broken(Lifecycle):
        async def start(self) -> None:
            await super().start()
            raise ConnectionError("bus unreachable")

    lifecycle = Broken()
    with pytest.raises(ConnectionError), client(lifecycle):
        pass
    assert lifecycle.calls == ["start", "stop"]


def test_readyz_is_503_when_a_check_fails_and_while_draining() -> None:
    with client(Lifecycle(database_up=False)) as http:
        response = http.get("/readyz")
        assert response.status_code == 503
        assert response.json() == {"ready": False, "checks": {"bus": True, "database": False}}

    class Watching(Consumer):
        during_drain: httpx.Response | None = None

        async def drain(self) -> None:
            # asked from inside the app's own loop, without its lifespan (ASGITransport runs none)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as inner:
                self.during_drain = await inner.get("/readyz")

    watching = Watching()
    app = build_app("test", watching, registry=CollectorRegistry())
    with TestClient(app) as http:
        assert http.get("/readyz").status_code == 200
    assert watching.during_drain is not None
    assert watching.during_drain.status_code == 503
    assert watching.during_drain.json()["draining"] is True


def test_docs_are_served() -> None:
    with client(Lifecycle()) as http:
        assert http.get("/docs").status_code == 200
        assert "/v1/pairing-tokens" in http.get("/openapi.json").json()["paths"]
