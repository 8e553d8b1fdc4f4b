"""`run_service` end to end in a process: JSON logs, the long-lived objects frozen, readiness, and SIGTERM
draining before stopping."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import orjson
import pytest

from tests.support import free_port

pytestmark = pytest.mark.unit

SERVICE = Path(__file__).with_name("kit_service.py")


def test_sigterm_stops_consuming_drains_then_stops(tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    port = free_port()
    env = {
        **os.environ,
        "FLEET_HTTP_HOST": "127.0.0.1",
        "FLEET_HTTP_PORT": str(port),
        "FLEET_SHUTDOWN_TIMEOUT_S": "5",
        "PYTHONPATH": str(Path.cwd()),
    }
    proc = subprocess.Popen(
        [sys.executable, str(SERVICE), str(journal)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        request_id = r.headers["x-request-id"]
                        break
            except OSError:
                assert time.monotonic() < deadline, "not ready"
                time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode in (0, -signal.SIGTERM)
    assert journal.read_text().split() == ["start", "stop_consuming", "drained", "stop"]
    lines = [orjson.loads(line) for line in output.decode().splitlines() if line.startswith("{")]
    messages = [line["message"] for line in lines]
    assert "kit-test started" in messages
    assert "kit-test stopped" in messages
    # the long-lived objects were frozen once the app was built (FLEET_GC_FREEZE on by default)
    frozen = " long-lived objects out of the garbage collector's sight"
    assert any(m.startswith("froze ") and m.endswith(frozen) for m in messages)
    assert all(line["service"] == "kit-test" for line in lines)
    assert request_id
