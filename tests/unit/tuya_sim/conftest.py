"""Fixtures of the tuya-sim unit tests: a simulator wired to an in-memory sink, a clock the test moves,
and an OpenAPI caller that signs with fleet_shared.tuya.signing."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fleet_shared.tuya.signing import sign_request
from fleet_tuya_sim.adapters.sinks import MemorySink
from fleet_tuya_sim.bootstrap import TuyaSim, bootstrap
from fleet_tuya_sim.entrypoints.app import create_app
from fleet_tuya_sim.settings import SimSettings

ACCESS_ID = "simunitaccess0000001"
ACCESS_SECRET = "unit0test0secret0for0the0sim0000"
OTHER_ID = "otherproject00000001"
OTHER_SECRET = "other0project0secret000000000000"
START = 1_750_000_000.0


@dataclass
class FakeClock:
    now: float = START

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def settings(**overrides: Any) -> SimSettings:
    values: dict[str, Any] = {
        "access_id": ACCESS_ID,
        "access_secret": ACCESS_SECRET,
        "extra_projects": {OTHER_ID: OTHER_SECRET},
        "devices": 20,
        "homes": 4,
        "seed": 7,
        "rate_limit_rps": 0,
    }
    values.update(overrides)
    return SimSettings(**values)


@dataclass
class Api:
    """Signs requests like Tuya's SDKs do and returns the decoded envelope."""

    client: TestClient
    clock: FakeClock
    access_id: str = ACCESS_ID
    secret: str = ACCESS_SECRET
    token: str = ""
    last_refresh: str = field(default="", repr=False)

    def call(
        self,
        method: str,
        path: str,
        query: dict[str, Any] | None = None,
        body: bytes = b"",
        *,
        token: str | None = None,
        t_ms: int | None = None,
        secret: str | None = None,
    ) -> dict[str, Any]:
        t = int(self.clock() * 1000) if t_ms is None else t_ms
        signed = sign_request(
            client_id=self.access_id,
            secret=secret or self.secret,
            t=t,
            method=method,
            path=path,
            query=query,
            body=body,
            access_token=self.token if token is None else token,
        )
        headers = signed.headers()
        if body:
            headers["Content-Type"] = "application/json"
        response = self.client.request(method, path, params=query, content=body or None, headers=headers)
        assert response.status_code == 200
        envelope: dict[str, Any] = response.json()
        return envelope

    def connect(self) -> dict[str, Any]:
        envelope = self.call("GET", "/v1.0/token", {"grant_type": 1}, token="")
        assert envelope["success"], envelope
        self.token = envelope["result"]["access_token"]
        self.last_refresh = envelope["result"]["refresh_token"]
        return envelope


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sink() -> MemorySink:
    return MemorySink()


@pytest.fixture
def service(clock: FakeClock, sink: MemorySink) -> TuyaSim:
    return bootstrap(settings(), sink=sink, clock=clock)


@pytest.fixture
def client(service: TuyaSim) -> Iterator[TestClient]:
    with TestClient(create_app(service)) as test_client:
        yield test_client


@pytest.fixture
def api(client: TestClient, clock: FakeClock) -> Api:
    api = Api(client, clock)
    api.connect()
    return api
