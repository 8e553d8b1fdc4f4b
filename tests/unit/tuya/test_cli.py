"""`fleet tuya decode` as an operator runs it: a subprocess reading one vector on stdin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from .conftest import load_vectors

pytestmark = pytest.mark.unit

VECTORS = {v["name"]: v for v in load_vectors()["push_messages"]}


def run_decode(
    vector: dict[str, Any], *, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    if env is None:
        env = {
            "FLEET_TUYA_ACCESS_ID": vector["access_id"],
            "FLEET_TUYA_ACCESS_SECRET": vector["access_secret"],
        }
    base = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_TUYA_")}
    stdin = json.dumps({"envelope": vector["envelope"], "pulsar_properties": vector["pulsar_properties"]})
    return subprocess.run(
        [sys.executable, "-m", "fleet_shared.cli", "tuya", "decode"],
        input=stdin,
        capture_output=True,
        text=True,
        env={**base, **env},
        timeout=60,
        check=False,
    )


def test_decode_ok() -> None:
    vector = VECTORS["p20-bindUser-gcm"]
    proc = run_decode(vector)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["protocol"] == 20
    assert out["data"] == vector["expect"]["data"]
    assert out["message"]["kind"] == "bindUser"
    assert out["message"]["biz_data"]["token"] == "nqMwn1Nd"
    assert vector["access_secret"] not in proc.stdout + proc.stderr


def test_decode_rejected() -> None:
    vector = VECTORS["bad-gcm-tag"]
    proc = run_decode(vector)
    assert proc.returncode == 1
    out = json.loads(proc.stdout)
    assert out["rejected"] == "decrypt"
    assert out["detail"]
    assert vector["access_secret"] not in proc.stdout + proc.stderr


def test_missing_env_is_a_usage_error() -> None:
    proc = run_decode(VECTORS["p4-status-ecb"], env={})
    assert proc.returncode == 2
    assert "FLEET_TUYA_ACCESS_SECRET" in proc.stderr


def test_console_script_is_installed() -> None:
    script = os.path.join(os.path.dirname(sys.executable), "fleet")
    assert os.path.exists(script)
