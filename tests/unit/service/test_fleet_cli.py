"""The `fleet` CLI's shared helpers and its status group, against a fake status API (httpx MockTransport)."""

from __future__ import annotations

import base64
import csv
import io
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from fleet_shared.cli import EXIT_FAILED, EXIT_USAGE, app, main
from fleet_shared.cli.errors import CliError
from fleet_shared.cli.http import CliContext
from fleet_shared.cli.output import Step, follow

pytestmark = pytest.mark.unit

KEY = "unit-status-key"


def shadow(n: int, product: str = "pidplug") -> dict[str, Any]:
    return {
        "device_id": f"dev{n:03d}",
        "product_id": product,
        "version": 3,
        "updated_at": "2026-11-29T10:00:00Z",
        "name": f"Plug {n}",
        "presence": {
            "online": n % 2 == 0,
            "changed_at_ms": 1_764_410_000_000,
            "last_seen_ms": 1_764_410_400_000,
        },
        "binding": {"state": "bound", "owner_uid": "ay1", "home_id": "home7"},
        "dps": {
            "switch_1": {"code": "switch_1", "dp_id": 1, "value": True, "type": "bool", "device_time_ms": 1},
            "cur_power": {
                "code": "cur_power",
                "dp_id": 19,
                "value": 12.5,
                "type": "value",
                "device_time_ms": 2,
            },
        },
        "dp_names": {},
        "firmware": {"0": {"channel": 0, "upgrade_status": 0, "version": "1.2.3"}},
    }


class FakeStatus:
    """status's `/v1/devices` API: pages of 2 with opaque cursors, shadows by id, bearer key checked."""

    def __init__(self, devices: int = 5) -> None:
        self.shadows = [shadow(n) for n in range(devices)]
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.headers.get("authorization") != f"Bearer {KEY}":
            return httpx.Response(401, json={"detail": "unknown API key"})
        path = request.url.path
        if path == "/v1/devices":
            rows = [
                s for s in self.shadows if s["product_id"] == request.url.params.get("product_id", "pidplug")
            ]
            cursor = request.url.params.get("cursor")
            start = int(base64.b64decode(cursor)) if cursor else 0
            page = rows[start : start + 2]
            more = start + 2 < len(rows)
            next_cursor = base64.b64encode(str(start + 2).encode()).decode() if more else None
            return httpx.Response(200, json={"items": page, "next_cursor": next_cursor})
        if path.startswith("/v1/devices/") and path.endswith("/shadow"):
            device_id = path.split("/")[3]
            for s in self.shadows:
                if s["device_id"] == device_id:
                    return httpx.Response(200, json=s)
            return httpx.Response(
                404,
                json={
                    "type": "about:blank",
                    "title": "Not Found",
                    "status": 404,
                    "detail": f"no shadow for {device_id}",
                },
                headers={"content-type": "application/problem+json"},
            )
        return httpx.Response(404, json={"detail": "Not Found"})


def run(api: Any, *args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> Any:
    context = CliContext(
        env={"FLEET_API_KEY": KEY} if env is None else env, transport=httpx.MockTransport(api)
    )
    return CliRunner().invoke(app, list(args), obj=context, input=stdin)


def test_device_shows_presence_dps_and_firmware() -> None:
    result = run(FakeStatus(), "status", "device", "dev002")
    assert result.exit_code == 0, result.stderr
    assert "dev002" in result.stdout
    assert "online" in result.stdout
    assert "cur_power" in result.stdout
    assert "12.5" in result.stdout
    assert "1.2.3" in result.stdout


def test_device_json_is_the_shadow() -> None:
    result = run(FakeStatus(), "status", "device", "dev001", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == shadow(1)


def test_missing_device_fails_with_the_services_detail() -> None:
    result = run(FakeStatus(), "status", "device", "nope")
    assert result.exit_code == EXIT_FAILED
    assert "404 Not Found: no shadow for nope" in result.stderr
    assert result.stdout == ""


def test_devices_pages_through_every_page_into_csv(tmp_path: Path) -> None:
    api = FakeStatus(devices=5)
    out = tmp_path / "devices.csv"
    result = run(api, "status", "devices", "--product", "pidplug", "--csv", str(out))
    assert result.exit_code == 0, result.stderr
    rows = list(csv.DictReader(out.open()))
    assert [r["device_id"] for r in rows] == [f"dev{n:03d}" for n in range(5)]
    assert rows[0]["presence"] == "online"
    assert rows[1]["presence"] == "offline"
    assert rows[0]["firmware"] == "0:1.2.3"
    assert rows[0]["dps"] == "2"
    assert rows[0]["last_seen"] == "2025-11-29 10:00:00Z"
    assert "wrote 5 devices" in result.stderr
    assert len(api.requests) == 3  # pages of 2
    assert all(r.url.params["product_id"] == "pidplug" for r in api.requests)
    assert api.requests[1].url.params["cursor"]


def test_devices_csv_to_stdout_and_max() -> None:
    result = run(FakeStatus(devices=5), "status", "devices", "--csv", "-", "--max", "3", "--online")
    assert result.exit_code == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 3


def test_devices_table_and_json() -> None:
    table = run(FakeStatus(devices=3), "status", "devices")
    assert table.exit_code == 0, table.stderr
    assert "3 devices" in table.stdout
    assert "dev002" in table.stdout
    as_json = run(FakeStatus(devices=3), "status", "devices", "--json")
    assert [s["device_id"] for s in json.loads(as_json.stdout)] == ["dev000", "dev001", "dev002"]


def test_devices_from_an_ids_csv_report_the_missing_ones(tmp_path: Path) -> None:
    ids = tmp_path / "returns.csv"
    ids.write_text("ticket,device_id\nT1,dev001\nT2,ghost01\nT3,dev001\nT4,dev003\n")
    result = run(FakeStatus(devices=5), "status", "devices", "--ids", str(ids), "--json")
    assert result.exit_code == EXIT_FAILED
    assert [s["device_id"] for s in json.loads(result.stdout)] == ["dev001", "dev003"]
    assert "no shadow for 1 of 3 devices: ghost01" in result.stderr


def test_ids_may_be_a_plain_list_on_stdin() -> None:
    result = run(
        FakeStatus(devices=5), "status", "devices", "--ids", "-", "--csv", "-", stdin="dev000\ndev004\n"
    )
    assert result.exit_code == 0, result.stderr
    assert [r["device_id"] for r in csv.DictReader(io.StringIO(result.stdout))] == ["dev000", "dev004"]


def test_a_malformed_id_is_a_usage_error_and_nothing_is_asked(tmp_path: Path) -> None:
    api = FakeStatus()
    ids = tmp_path / "ids.csv"
    ids.write_text("device_id\ndev001\nbad id; drop\n")
    result = run(api, "status", "devices", "--ids", str(ids))
    assert result.exit_code == EXIT_USAGE
    assert "not a device id on line 3" in result.stderr
    assert not api.requests
    ids.write_text("serial,ticket\n1,2\n")
    result = run(api, "status", "devices", "--ids", str(ids))
    assert result.exit_code == EXIT_USAGE
    assert "no 'device_id' column" in result.stderr


def test_api_key_from_the_stack_key_file_and_url_from_the_environment(tmp_path: Path) -> None:
    (tmp_path / "status-api-key").write_text(KEY + "\n")
    api = FakeStatus()
    env = {"FLEET_STACK_DIR": str(tmp_path), "FLEET_STATUS_URL": "http://status.example:9000/"}
    result = run(api, "status", "device", "dev000", "--json", env=env)
    assert result.exit_code == 0, result.stderr
    assert str(api.requests[0].url) == "http://status.example:9000/v1/devices/dev000/shadow"


def test_wrong_key_says_how_to_set_one() -> None:
    result = run(
        FakeStatus(), "status", "devices", env={"FLEET_API_KEY": "wrong", "FLEET_STACK_DIR": "/nonexistent"}
    )
    assert result.exit_code == EXIT_FAILED
    assert "401" in result.stderr
    assert "FLEET_API_KEY" in result.stderr
    assert "wrong" not in result.stderr


def test_invalid_fields_of_a_problem_are_listed() -> None:
    def refuses(request: httpx.Request) -> httpx.Response:
        errors = [
            {"field": "query.limit", "message": "Input should be less than or equal to 500", "type": "x"}
        ]
        return httpx.Response(422, json={"title": "Unprocessable Entity", "status": 422, "errors": errors})

    result = run(refuses, "status", "devices")
    assert result.exit_code == EXIT_FAILED
    assert "query.limit: Input should be less than or equal to 500" in result.stderr


def test_an_unreachable_service_is_a_clear_failure() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    result = run(down, "status", "devices")
    assert result.exit_code == EXIT_FAILED
    assert "status at http://127.0.0.1:8002 is not reachable" in result.stderr


def test_usage_errors_exit_2() -> None:
    assert main(["nothing-such"]) == EXIT_USAGE
    assert main(["status", "devices", "--max", "0"]) == EXIT_USAGE


def test_follow_polls_until_done_and_returns_the_last_body() -> None:
    bodies = iter(
        [
            {"done": 0, "total": None, "state": "queued"},
            {"done": 4, "total": 10, "state": "running"},
            {"done": 10, "total": 10, "state": "finished"},
        ]
    )
    slept: list[float] = []

    def read(body: Any) -> Step:
        return Step(body["done"], body["total"], body["state"] == "finished", body["state"])

    last = follow(lambda: next(bodies), read, what="batch b1", interval_s=0.5, sleep=slept.append, show=False)
    assert last["state"] == "finished"
    assert slept == [0.5, 0.5]


def test_follow_gives_up_after_its_timeout() -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    with pytest.raises(CliError, match="batch b1: not done after 3s \\(4 of 10\\)"):
        follow(
            lambda: {"done": 4},
            lambda body: Step(body["done"], 10, False),
            what="batch b1",
            interval_s=1.0,
            timeout_s=3.0,
            sleep=sleep,
            clock=lambda: now[0],
            show=False,
        )


def test_a_success_that_is_not_json_is_a_clear_failure() -> None:
    result = run(lambda request: httpx.Response(200, text="<html>proxy</html>"), "status", "devices")
    assert result.exit_code == EXIT_FAILED
    assert "not JSON" in result.stderr
