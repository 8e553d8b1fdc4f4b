"""`fleet pair`: create a session (QR in the terminal, devices joining, causes), show, list, cancel, against a
fake pairing API (httpx MockTransport)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from fleet_shared.cli import EXIT_FAILED, EXIT_USAGE, app
from fleet_shared.cli.http import CliContext
from fleet_shared.cli.pairing import progress_of, qr_text

pytestmark = pytest.mark.unit

KEY = "unit-pairing-key"
PASSWORD = 'pä"ss word'


def device(n: int, outcome: str = "paired", cause: str | None = None) -> dict[str, Any]:
    failure = {"code": "3", "cause": cause, "description": "wrong", "hint": None} if cause else None
    return {
        "key": f"dev{n}",
        "device_id": f"dev{n}",
        "product_id": "pid",
        "name": f"Cam {n}",
        "outcome": outcome,
        "at": "2026-11-29T10:00:00Z",
        "source": "push",
        "failure": failure,
        "previous_owner_uid": None,
        "removal": None,
    }


def session(state: str, devices: list[dict[str, Any]], expected: int = 1) -> dict[str, Any]:
    counts = {k: sum(d["outcome"] == k for d in devices) for k in ("paired", "failed", "late")}
    return {
        "session_id": "ps_1",
        "state": state,
        "owner_uid": "ay1",
        "home_id": "h1",
        "mode": "QR",
        "expected_devices": expected,
        "counts": {**counts, "unexpected_product": 0},
        "devices": devices,
        "issued_at": "2026-11-29T10:00:00Z",
        "expires_at": "2026-11-29T10:10:00Z",
    }


class FakePairing:
    def __init__(self, final: dict[str, Any]) -> None:
        self.final = final
        self.bodies: list[Any] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.headers.get("authorization") != f"Bearer {KEY}":
            return httpx.Response(401, json={"detail": "unknown API key"})
        path = request.url.path
        if request.method == "POST" and path == "/v1/pairing-sessions":
            body = json.loads(request.content)
            self.bodies.append(body)
            payload = json.dumps({"s": body["wifi"]["ssid"], "p": body["wifi"]["password"], "t": "EUtok"})
            qr = {"payload": payload, "svg": "<svg/>", "png_base64": ""}
            answer = {"session": session("active", []), "replayed": False, "assembled_token": "EUtok"}
            return httpx.Response(201, json={**answer, "ble_token": None, "qr": qr})
        if path == "/v1/pairing-sessions/ps_1":
            return httpx.Response(200, json=self.final)
        if path == "/v1/pairing-sessions/ps_1/cancel":
            return httpx.Response(200, json=session("cancelled", []))
        if path == "/v1/pairing-sessions":
            return httpx.Response(200, json={"items": [self.final], "next_cursor": None})
        return httpx.Response(404, json={"detail": "not found"})


def run(api: Any, *args: str, stdin: str | None = None) -> Any:
    context = CliContext(env={"FLEET_API_KEY": KEY}, transport=httpx.MockTransport(api))
    return CliRunner().invoke(app, list(args), obj=context, input=stdin)


CREATE = ("pair", "--owner", "ay1", "--home", "h1", "--mode", "QR", "--ssid", "Café", "--password-stdin")


def test_a_qr_session_prints_the_code_and_follows_the_devices() -> None:
    api = FakePairing(session("succeeded", [device(1)]))
    result = run(api, *CREATE, stdin=PASSWORD + "\n")
    assert result.exit_code == 0, result.stderr
    assert api.bodies[0]["wifi"] == {"ssid": "Café", "password": PASSWORD}
    assert qr_text(json.dumps({"s": "Café", "p": PASSWORD, "t": "EUtok"})) in result.stdout
    assert "dev1" in result.stdout
    assert "succeeded" in result.stdout


def test_a_failed_session_exits_1_with_its_causes() -> None:
    api = FakePairing(session("failed", [device(1, "failed", "wrong_wifi_password")]))
    result = run(api, *CREATE, stdin=PASSWORD + "\n")
    assert result.exit_code == EXIT_FAILED
    assert "1x wrong_wifi_password" in result.stderr  # the cause as it came, on the progress line
    assert "ended failed" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("pair", "--home", "h1"),
        ("pair", "--owner", "ay1", "--home", "h1", "--mode", "QR"),
        ("pair", "--owner", "ay1", "--home", "h1", "--mode", "EZ", "--ssid", "x"),
        ("pair", "--owner", "ay1", "--home", "h1", "--mode", "ZIGBEE"),
        ("pair", "list", "--state", "weird"),
    ],
)
def test_usage_errors_exit_2(args: tuple[str, ...]) -> None:
    assert run(FakePairing(session("active", [])), *args).exit_code == EXIT_USAGE


def test_show_list_and_cancel() -> None:
    api = FakePairing(session("partially_succeeded", [device(1), device(2, "failed", "timeout")], 3))
    shown = run(api, "pair", "show", "ps_1")
    assert shown.exit_code == 0, shown.stderr
    assert "timeout" in shown.stdout
    listed = run(api, "pair", "list", "--json")
    assert json.loads(listed.stdout)[0]["session_id"] == "ps_1"
    cancelled = run(api, "pair", "cancel", "ps_1")
    assert "cancelled" in cancelled.stdout


def test_progress_counts_paired_devices_and_names_failure_causes() -> None:
    step = progress_of(session("active", [device(1), device(2, "failed", "timeout")], 3))
    assert (step.completed, step.total, step.done) == (1, 3, False)
    assert "1x timeout" in step.label
