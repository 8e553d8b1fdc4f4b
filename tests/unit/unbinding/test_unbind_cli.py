"""`fleet unbind` against a fake unbinding API (httpx MockTransport): batches of at most 1,000, progress
followed to the end, refusals summed by cause, results written back as CSV, exit code 1 when any refused."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from fleet_shared.cli import app
from fleet_shared.cli.http import CliContext
from fleet_shared.qr import terminal_text

pytestmark = pytest.mark.unit

KEY = "unit-unbinding-key"


class FakeUnbinding:
    """Batches finish at once: every device unbound except those whose id ends in 9 (quota exceeded)."""

    def __init__(self) -> None:
        self.batches: dict[str, list[str]] = {}
        self.bodies: list[dict[str, Any]] = []
        self.keys: list[str | None] = []

    def _results(self, batch_id: str) -> list[dict[str, Any]]:
        return [
            {
                "batch_id": batch_id,
                "device_id": d,
                "product_id": "p1",
                "result": "refused" if d.endswith("9") else "unbound",
                "cause": "quota_exceeded" if d.endswith("9") else None,
            }
            for d in self.batches[batch_id]
        ]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.headers.get("authorization") != f"Bearer {KEY}":
            return httpx.Response(401, json={"detail": "unknown API key"})
        path = request.url.path
        if request.method == "POST" and path == "/v1/batches":
            body = orjson.loads(request.content)
            self.bodies.append(body)
            self.keys.append(request.headers.get("idempotency-key"))
            if body.get("mode") == "qr":
                batch_id = "bqr"
                self.batches[batch_id] = ["qr1", "qr9"]
                return httpx.Response(
                    201, json={"batch_id": batch_id, "status": "running", "qr_payload": "{}"}
                )
            batch_id = f"b{len(self.batches)}"
            self.batches[batch_id] = body["device_ids"]
            return httpx.Response(201, json={"batch_id": batch_id, "status": "running", "done": 0})
        batch_id = path.split("/")[3]
        results = self._results(batch_id)
        if path.endswith("/results"):
            return httpx.Response(200, json=results)
        refused = sum(1 for r in results if r["result"] == "refused")
        return httpx.Response(
            200,
            json={
                "batch_id": batch_id,
                "status": "finished",
                "total": len(results),
                "done": len(results),
                "refused_by_cause": {"quota_exceeded": refused} if refused else {},
            },
        )


def run(api: FakeUnbinding, *args: str, env: dict[str, str] | None = None) -> Any:
    context = CliContext(env={"FLEET_API_KEY": KEY, **(env or {})}, transport=httpx.MockTransport(api))
    return CliRunner().invoke(app, ["unbind", *args], obj=context)


def test_a_device_file_is_sent_in_batches_of_1000_and_the_results_come_back_as_csv(tmp_path: Path) -> None:
    source = tmp_path / "returns.csv"
    source.write_text("device_id,note\n" + "".join(f"dev{i:05d},x\n" for i in range(1500)))
    api = FakeUnbinding()
    result = run(api, str(source), "--reset", "--key", "ticket-7", "--out", str(tmp_path / "out.csv"))
    assert [len(b["device_ids"]) for b in api.bodies] == [1000, 500]
    assert all(b["reset"] for b in api.bodies)
    assert api.keys == ["ticket-7:1", "ticket-7:2"]  # a rerun names the same batches
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out.csv").read_text())))
    assert len(rows) == 1500
    assert {r["cause"] for r in rows if r["result"] == "refused"} == {"quota_exceeded"}
    assert result.exit_code == 1  # some refused
    assert "refused 150 (quota_exceeded: 150)" in result.stdout


def test_all_unbound_exits_0_and_the_default_output_sits_beside_the_input(
    tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "few.csv").write_text("dev1\ndev2\n")
    result = run(FakeUnbinding(), "few.csv")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "few.results.csv").read_text().count("unbound") == 2


def test_qr_prints_code_and_payload_once_and_takes_the_password_from_the_environment(tmp_path: Path) -> None:
    api = FakeUnbinding()
    out = tmp_path / "qr.csv"
    result = run(
        api,
        "--qr",
        "--uid",
        "ay1",
        "--ssid",
        "shop",
        "--out",
        str(out),
        env={"FLEET_WIFI_PASSWORD": "pw-123"},
    )
    assert api.bodies[0]["password"] == "pw-123"
    assert api.bodies[0]["mode"] == "qr"
    assert "{}" in result.stdout
    assert terminal_text(SecretStr("{}")) in result.stdout  # the same renderer as `fleet pair`
    assert result.exit_code == 1
    assert "pw-123" not in out.read_text()


def test_usage_errors_ask_nothing() -> None:
    api = FakeUnbinding()
    assert run(api).exit_code == 2
    assert run(api, "x.csv", "--qr").exit_code == 2
    assert api.bodies == []
