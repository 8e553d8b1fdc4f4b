"""`fleet ota` against a fake ota API (httpx MockTransport): requests it sends, tables and bars it shows."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
from typer.testing import CliRunner

from fleet_shared.cli.app import app
from fleet_shared.cli.http import CliContext
from fleet_shared.cli.ota import parse_devices, progress_rows

pytestmark = pytest.mark.unit

KEY = "k" * 24


def stage(name: str, targeted: int, succeeded: int, failed: int) -> dict[str, Any]:
    return {
        "stage": name,
        "targeted": targeted,
        "pending": targeted - succeeded - failed,
        "upgrading": 0,
        "waiting": 0,
        "succeeded": succeeded,
        "failed": failed,
        "cancelled": 0,
        "success_rate": succeeded / (succeeded + failed) if succeeded + failed else None,
        "failure_rate": failed / (succeeded + failed) if succeeded + failed else None,
    }


RELEASE: dict[str, Any] = {
    "release_id": "r1",
    "firmware_id": "pid:0:1.3",
    "product_id": "pid",
    "channel": 0,
    "version": "1.3.0",
    "regions": [
        {
            "region": "eu",
            "status": "halted",
            "stage": "canary",
            "stage_started_at": None,
            "stages": [stage("canary", 30, 18, 12)],
        },
        {
            "region": "us",
            "status": "completed",
            "stage": "full",
            "stage_started_at": None,
            "stages": [stage("canary", 30, 30, 0), stage("full", 70, 70, 0)],
        },
        {"region": "in", "status": "scheduled", "stage": None, "stage_started_at": None, "stages": []},
    ],
}


class FakeOta:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body: Any = orjson.loads(request.content) if request.content else None
        self.requests.append((request.method, request.url.path, body))
        assert request.headers["authorization"] == f"Bearer {KEY}"
        if request.url.path.startswith("/v1/releases"):
            done = {**RELEASE, "regions": [r | {"status": "completed"} for r in RELEASE["regions"]]}
            return httpx.Response(200 if request.method == "GET" else 201, json=done if body else RELEASE)
        if request.url.path == "/v1/devices":
            return httpx.Response(200, json={"recorded": len(body["devices"])})
        return httpx.Response(404, json={"detail": "Not Found"})


def run(api: Any, *args: str, stdin: str | None = None) -> Any:
    context = CliContext(env={"FLEET_API_KEY": KEY}, transport=httpx.MockTransport(api))
    return CliRunner().invoke(app, list(args), obj=context, input=stdin)


def test_progress_rows_give_one_row_per_region_and_stage() -> None:
    rows = progress_rows(RELEASE)
    assert [(r["region"], r["stage"]) for r in rows] == [
        ("eu", "canary"),
        ("us", "canary"),
        ("us", "full"),
        ("in", "-"),
    ]


def test_release_create_sends_one_plan_per_region() -> None:
    api = FakeOta()
    result = run(
        api, "ota", "release", "create", "r1", "--firmware", "pid:0:1.3", "--region", "eu", "--region", "us",
        "--canary-quantity", "30", "--promote-at", "0.9", "--promote-sample", "20", "--halt-at", "0.2",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    [(method, path, body)] = api.requests
    assert (method, path) == ("POST", "/v1/releases")
    assert [p["region"] for p in body["regions"]] == ["eu", "us"]
    assert body["regions"][0]["canary_quantity"] == 30
    assert body["regions"][0]["promote_at"] == {"rate": 0.9, "min_sample": 20}
    assert body["regions"][0]["halt_at"] == {"rate": 0.2, "min_sample": 0}
    assert "r1" in result.stdout
    as_json = run(api, "ota", "release", "show", "r1", "--json")
    assert orjson.loads(as_json.stdout)["regions"][0]["status"] == "halted"


def test_release_create_refuses_a_canary_by_ratio_and_quantity() -> None:
    result = run(FakeOta(), "ota", "release", "create", "r1", "--firmware", "f", "--region", "eu",
                 "--canary-ratio", "0.1", "--canary-quantity", "3")  # fmt: skip
    assert result.exit_code == 2


def test_region_commands_go_to_the_region_path() -> None:
    api = FakeOta()
    result = run(api, "ota", "release", "pause", "r1", "--region", "eu", "--reason", "night")
    assert result.exit_code == 0, result.output
    assert api.requests == [("POST", "/v1/releases/r1/regions/eu/pause", {"reason": "night"})]


def test_watch_stops_once_every_region_is_settled() -> None:
    class Settling(FakeOta):
        def __call__(self, request: httpx.Request) -> httpx.Response:
            self.requests.append((request.method, request.url.path, None))
            done = len(self.requests) >= 2
            regions = (
                [r | {"status": "completed"} for r in RELEASE["regions"]] if done else RELEASE["regions"]
            )
            return httpx.Response(200, json={**RELEASE, "regions": regions})

    api = Settling()
    result = run(api, "ota", "release", "watch", "r1", "--interval", "0.1")
    assert result.exit_code == 0, result.output
    assert len(api.requests) == 2


def test_devices_import_reads_versions_per_channel() -> None:
    csv_text = (
        "device_id,product_id,region,activated_at,versions\nd1,pid,eu,2026-01-01T00:00:00Z,0:1.2.0;9:1.0.3\n"
    )
    assert parse_devices(csv_text)[0]["versions"] == {0: "1.2.0", 9: "1.0.3"}
    api = FakeOta()
    result = run(api, "ota", "devices", "import", "-", stdin=csv_text)
    assert result.exit_code == 0, result.output
    assert api.requests[0][2]["devices"][0]["device_id"] == "d1"
    bad = run(api, "ota", "devices", "import", "-", stdin="device_id,region\nd1,eu\n")
    assert bad.exit_code == 2
