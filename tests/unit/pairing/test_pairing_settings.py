"""pairing's settings from the environment."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from pydantic import ValidationError

from fleet_pairing.settings import PairingSettings

pytestmark = pytest.mark.unit


def test_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_PAIRING_DATABASE", "pairing_x")
    monkeypatch.setenv("FLEET_PAIRING_BINDING_MODES", "p1:strong")
    settings = PairingSettings()
    assert settings.pairing_database == "pairing_x"
    assert settings.pairing_binding_modes == "p1:strong"
    assert settings.pairing_settle_s >= settings.pairing_poll_interval_s


def test_the_settle_window_must_cover_a_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_PAIRING_POLL_INTERVAL_S", "20")
    monkeypatch.setenv("FLEET_PAIRING_SETTLE_S", "10")
    with pytest.raises(ValidationError, match="SETTLE"):
        PairingSettings()


def test_a_bad_default_binding_mode_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_PAIRING_DEFAULT_BINDING_MODE", "loose")
    with pytest.raises(ValidationError):
        PairingSettings()


@pytest.mark.parametrize(("env", "threads"), [({}, 64), ({"MOTOR_MAX_WORKERS": "7"}, 7)])
def test_the_entry_point_sizes_the_database_thread_pool_before_motor_is_imported(
    env: dict[str, str], threads: int
) -> None:
    probe = "import fleet_pairing.__main__, motor.frameworks.asyncio as m; print(m._EXECUTOR._max_workers)"
    base = {k: v for k, v in os.environ.items() if k != "MOTOR_MAX_WORKERS"}
    out = subprocess.run(
        [sys.executable, "-c", probe], env=base | env, capture_output=True, text=True, check=True
    )
    assert int(out.stdout) == threads
