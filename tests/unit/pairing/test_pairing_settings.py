"""pairing's settings from the environment."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from fleet_pairing.settings import PairingSettings

pytestmark = pytest.mark.unit


def test_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_PAIRING_DATABASE", "pairing_x")
    monkeypatch.setenv("FLEET_PAIRING_BINDING_MODES", "p1:strong")
    settings = PairingSettings()
    assert settings.database == "pairing_x"
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
