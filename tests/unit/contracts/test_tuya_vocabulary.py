"""Tuya's vocabularies are defined once, in fleet_contracts.tuya, and everyone uses that one definition."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fleet_contracts import device, ota
from fleet_contracts.tuya import (
    CHANNEL_MCU,
    CHANNEL_MODULE,
    DpType,
    OtaUpgradeStatus,
    PushProtocol,
    UpgradeType,
    channel_name,
)
from fleet_shared.tuya import messages, models

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
VOCABULARY = ROOT / "contracts" / "src" / "fleet_contracts" / "tuya.py"


@pytest.mark.parametrize(
    ("spelling", "expected"),
    [
        ("Boolean", DpType.BOOLEAN),
        ("bool", DpType.BOOLEAN),
        ("value", DpType.INTEGER),
        ("Integer", DpType.INTEGER),
        ("int", DpType.INTEGER),
        (" enum ", DpType.ENUM),
        ("Bitmap", DpType.BITMAP),
        ("fault", DpType.BITMAP),
        ("string", DpType.STRING),
        ("str", DpType.STRING),
        ("Raw", DpType.RAW),
        ("json", DpType.JSON),
        ("Json", DpType.JSON),
        ("float", None),
        ("", None),
    ],
)
def test_every_spelling_of_a_dp_type_is_understood(spelling: str, expected: DpType | None) -> None:
    assert DpType.parse(spelling) is expected
    assert models.normalise_dp_type(spelling) is expected


def test_dp_types_have_their_specification_and_device_names() -> None:
    assert [t.value for t in DpType] == ["Boolean", "Integer", "Enum", "String", "Json", "Raw", "Bitmap"]
    assert [t.device_name for t in DpType] == ["bool", "value", "enum", "string", "json", "raw", "bitmap"]
    assert all(DpType.parse(t.device_name) is t for t in DpType)


def test_push_protocols_and_upgrade_codes() -> None:
    assert [int(p) for p in PushProtocol] == [4, 20, 1000, 1001, 1002]
    assert messages.PROTOCOL_STATUS is PushProtocol.STATUS
    assert messages.PROTOCOL_OTA is PushProtocol.OTA
    assert {int(s) for s in OtaUpgradeStatus} == {0, 1, 2, 3, 4, 5, 7}
    assert [int(t) for t in UpgradeType] == [0, 1, 2, 3]
    assert (CHANNEL_MODULE, CHANNEL_MCU) == (0, 9)
    assert [channel_name(c) for c in (0, 9, 10)] == ["main module", "mcu", "extension 10"]


def test_the_contracts_and_the_tuya_edge_use_the_one_definition() -> None:
    assert device.OtaUpgradeStatus is OtaUpgradeStatus
    assert ota.UpgradeType is UpgradeType
    assert models.DpSpec.model_validate({"code": "x", "type": "bool"}).type is DpType.BOOLEAN


@pytest.mark.parametrize(
    "name", ["DpType", "PushProtocol", "OtaUpgradeStatus", "UpgradeStatus", "UpgradeType"]
)
def test_no_package_defines_its_own_copy(name: str) -> None:
    pattern = re.compile(rf"^\s*class {name}\b", re.MULTILINE)
    sources = [*ROOT.glob("contracts/src/**/*.py"), *ROOT.glob("shared/src/**/*.py")]
    sources += ROOT.glob("services/*/src/**/*.py")
    defined = [p.relative_to(ROOT) for p in sources if p != VOCABULARY and pattern.search(p.read_text())]
    assert defined == [], f"{name} is Tuya's vocabulary: import it from fleet_contracts.tuya"
