"""The one registry of services, and the local stack that reads it."""

from __future__ import annotations

import stat
import tomllib
from pathlib import Path

import pytest

from fleet_devstack.config import StackConfig
from fleet_devstack.services import LocalService, api_key
from fleet_shared.service.registry import SERVICES, service

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]


def test_names_ports_packages_and_scripts_are_unique() -> None:
    for attribute in ("name", "dev_port", "package", "script", "env_prefix"):
        values = [getattr(entry, attribute) for entry in SERVICES]
        assert len(values) == len(set(values)), attribute


def test_every_service_folder_has_an_entry_matching_its_pyproject() -> None:
    folders = sorted(p.parent for p in (ROOT / "services").glob("*/pyproject.toml"))
    assert folders
    for folder in folders:
        entry = service(folder.name)
        project = tomllib.loads((folder / "pyproject.toml").read_text())["project"]
        assert entry.script in project["scripts"], folder.name
        assert (folder / "src" / entry.package / "__init__.py").exists(), folder.name


def test_the_coming_services_are_listed_already() -> None:
    assert {"pairing", "unbinding", "ota"} <= {entry.name for entry in SERVICES}
    with pytest.raises(KeyError, match="known: tuya-sim"):
        service("nothing")


def _config(tmp_path: Path) -> StackConfig:
    return StackConfig("unit", tmp_path, 1, 2, 3, 4, "64m", "access0001")


def test_every_service_with_an_api_gets_its_own_stack_key(tmp_path: Path) -> None:
    config = _config(tmp_path)
    status_env = LocalService(config, service("status")).env()
    ota_env = LocalService(config, service("ota")).env()
    status_key = (config.stack_dir / "status-api-key").read_text()
    assert status_env["FLEET_STATUS_API_KEYS"] == f"devstack:{status_key}"
    assert ota_env["FLEET_OTA_API_KEYS"] == f"devstack:{api_key(config, 'ota')}"
    assert status_key != api_key(config, "ota")
    assert api_key(config, "status") == status_key  # made once per stack, then read
    assert stat.S_IMODE((config.stack_dir / "status-api-key").stat().st_mode) == 0o600
    ingest_env = LocalService(config, service("ingest")).env()
    assert not any(k.endswith("_API_KEYS") for k in ingest_env)
    assert status_env["FLEET_HTTP_PORT"] == "8002"
    assert status_env["FLEET_TUYA_OPENAPI_URL"] == "http://127.0.0.1:9010"
    with pytest.raises(ValueError, match="no API keys"):
        api_key(config, "ingest")


def test_entries_are_hashable_values() -> None:
    assert len(set(SERVICES)) == len(SERVICES)


def test_the_local_stack_samples_traces_unless_started_with_a_sampler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OTEL_TRACES_SAMPLER", raising=False)
    monkeypatch.delenv("OTEL_TRACES_SAMPLER_ARG", raising=False)
    for entry in SERVICES:
        env = LocalService(_config(tmp_path), entry).env()
        assert (env["OTEL_TRACES_SAMPLER"], env["OTEL_TRACES_SAMPLER_ARG"]) == (
            "parentbased_traceidratio",
            "0.05",
        )
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_on")  # `OTEL_TRACES_SAMPLER=always_on ./dev up`
    env = LocalService(_config(tmp_path), service("status")).env()
    assert env["OTEL_TRACES_SAMPLER"] == "always_on"
    assert "OTEL_TRACES_SAMPLER_ARG" not in env
