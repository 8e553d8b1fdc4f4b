"""The import-linter contracts in pyproject.toml cover every service package: a service added under
services/*/src/ fails here until it is listed, so it is checked the day it is added."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
LAYERS = ("domain", "adapters", "entrypoints")


def _config() -> dict[str, Any]:
    config: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return config


def _contract(contract_id: str) -> dict[str, Any]:
    contract: dict[str, Any] = next(c for c in _config()["contracts"] if c["id"] == contract_id)
    return contract


def service_packages() -> list[str]:
    return sorted(p.parent.name for p in ROOT.glob("services/*/src/*/__init__.py"))


def test_the_known_services_are_found() -> None:
    assert {"fleet_ingest", "fleet_status", "fleet_tuya_sim"} <= set(service_packages())


@pytest.mark.parametrize("package", service_packages())
def test_every_service_package_is_analysed(package: str) -> None:
    assert package in _config()["root_packages"], f"add {package} to [tool.importlinter] root_packages"


@pytest.mark.parametrize("package", service_packages())
def test_every_service_package_is_independent_of_the_others(package: str) -> None:
    modules = _contract("services-independent")["modules"]
    assert package in modules, f"add {package} to the services-independent contract's modules"


def test_layer_contracts_name_layers_of_any_package() -> None:
    # Wildcards, not package names: a package listed in root_packages is covered with no further edit.
    domain = _contract("domain-pure")
    assert domain["source_modules"] == ["*.domain"]
    assert {"*.adapters", "*.entrypoints", "motor", "pymongo", "pulsar", "httpx", "fastapi"} <= set(
        domain["forbidden_modules"]
    )
    entrypoints = _contract("entrypoints-thin")
    assert entrypoints["source_modules"] == ["*.entrypoints"]
    assert entrypoints["forbidden_modules"] == ["*.adapters"]
    assert _config()["include_external_packages"] is True  # else the library names match nothing


def test_nothing_else_is_a_root_package_but_the_shared_ones() -> None:
    extra = set(_config()["root_packages"]) - set(service_packages())
    assert extra == {"fleet_contracts", "fleet_shared"}  # analysed for indirect imports through them
