"""Every variable the READMEs' configuration tables document is read, into the field it names, by the settings
of the domain services built on the kit's bases (`DomainSettings`, `DeviceConsumerSettings`): a service's own
table (`FLEET_OTA_...`) and the common table of the root README. The kit's fields keep their variables under
the service's prefix (`FLEET_OTA_DATABASE` -> `database`) and are read under no other name."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsError

from fleet_ota.settings import OtaSettings
from fleet_pairing.settings import PairingSettings
from fleet_shared.service.domain import DeviceConsumerSettings, DomainSettings
from fleet_shared.service.registry import service
from fleet_shared.service.settings import ServiceSettings
from fleet_status.settings import StatusSettings
from fleet_unbinding.settings import UnbindingSettings

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
SETTINGS: dict[str, type[DomainSettings]] = {
    "ota": OtaSettings,
    "pairing": PairingSettings,
    "status": StatusSettings,
    "unbinding": UnbindingSettings,
}
KIT_FIELDS = {
    "database",
    "api_keys",
    "subscription",
    "max_redeliveries",
    "receiver_queue_size",
    "initial_position",
}
MARKER = "zz-not-a-default"


def documented(readme: Path) -> set[str]:
    """The variables named in the first column of the file's tables (a table under a `FLEET_` prefix heading
    names them without it)."""
    names = set()
    for line in readme.read_text().splitlines():
        if line.startswith("| `"):
            for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", line.split("|")[1]):
                names.add(name if name.startswith(("FLEET_", "OTEL_", "MOTOR_")) else f"FLEET_{name}")
    return names


def _plain(value: object) -> object:
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def _field_of(settings: type[BaseSettings], loc: str) -> str:
    """The field an error's location names: its own name or an alias (`FLEET_GC_FREEZE`)."""
    for name, field in settings.model_fields.items():
        if loc == name or loc in str(field.validation_alias or ""):
            return name
    return loc


def read_into(settings: type[BaseSettings], variable: str, monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """The fields a value of `variable` lands in (a value they refuse names them too)."""
    before = {name: _plain(value) for name, value in settings().model_dump().items()}
    monkeypatch.setenv(variable, MARKER)
    try:
        after = {name: _plain(value) for name, value in settings().model_dump().items()}
    except ValidationError as e:
        return {_field_of(settings, str(error["loc"][0])) for error in e.errors()}
    except SettingsError as e:  # a JSON field (a list, a mapping) that could not parse it
        return set(re.findall(r'field "([a-z0-9_]+)"', str(e)))
    finally:
        monkeypatch.delenv(variable)
    return {name for name in before if before[name] != after[name]}


@pytest.fixture(autouse=True)
def no_fleet_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith(("FLEET_", "OTEL_EXPORTER_OTLP"))]:
        monkeypatch.delenv(name)


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_each_documented_variable_of_the_service_is_read_into_its_field(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = SETTINGS[name]
    prefix = f"{service(name).env_prefix}_"
    variables = sorted(v for v in documented(ROOT / "services" / name / "README.md") if v.startswith(prefix))
    assert len(variables) >= 2, f"no configuration table found in services/{name}/README.md"
    for variable in variables:
        field = variable.removeprefix(prefix).lower()
        expected = field if field in KIT_FIELDS else variable.removeprefix("FLEET_").lower()
        assert read_into(settings, variable, monkeypatch) == {expected}, variable


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_the_common_documented_variables_read_as_every_services(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    common = {
        v
        for v in documented(ROOT / "README.md")
        if v.removeprefix("FLEET_").lower() in ServiceSettings.model_fields
    }
    assert {"FLEET_PULSAR_URL", "FLEET_MONGODB_URI", "FLEET_HTTP_PORT"} <= common
    for variable in sorted(common):
        field = variable.removeprefix("FLEET_").lower()
        assert read_into(SETTINGS[name], variable, monkeypatch) == {field}, variable


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_the_kits_fields_are_read_under_the_service_prefix_only(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = SETTINGS[name]
    own = [f for f in KIT_FIELDS if f in settings.model_fields]
    assert {"database", "api_keys"} <= set(own)
    if issubclass(settings, DeviceConsumerSettings):
        assert set(own) == KIT_FIELDS
    for field in own:
        assert read_into(settings, f"FLEET_{field.upper()}", monkeypatch) == set(), field
    # the registry's name for the keys variable (the local stack seeds it) is the one read
    assert read_into(settings, service(name).api_keys_variable, monkeypatch) == {"api_keys"}


def test_database_and_subscription_default_to_the_services_name() -> None:
    assert (OtaSettings().database, OtaSettings().subscription) == ("ota", "ota")
    assert UnbindingSettings().database == "unbinding"
    assert StatusSettings(database="s1", subscription="s2").device_subscription.name == "s2"
    assert StatusSettings(database="s1").database == "s1"


def test_ota_never_starts_a_subscription_at_the_earliest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_OTA_INITIAL_POSITION", "earliest")
    with pytest.raises(ValidationError, match="initial_position"):
        OtaSettings()
