"""Tuya's pairing/BLE error codes mapped to typed causes (bluetooth-devices.txt, 1-601)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fleet_pairing.domain.causes import (
    TUYA_OPENAPI_RESULT_CODES,
    TUYA_PAIRING_CODES,
    FailureCause,
    failure_for,
)

pytestmark = pytest.mark.unit

# the guide's table, copied verbatim (shared/tuya/docs/bluetooth-devices.txt is not part of the repository)
GUIDE = Path(__file__).with_name("tuya_pairing_error_codes.txt")


def documented_codes() -> dict[int, str]:
    text = GUIDE.read_text(encoding="utf-8")
    table = text[text.index("Error code Description") :]
    return {int(m[1]): m[2].strip() for m in re.finditer(r"^(\d{1,3}) (.+)$", table, re.MULTILINE)}


def test_the_table_holds_every_documented_code_with_tuyas_words() -> None:
    documented = documented_codes()
    assert len(documented) >= 70
    assert {code: desc for code, (_, desc) in TUYA_PAIRING_CODES.items()} == documented


@pytest.mark.parametrize(
    ("code", "cause"),
    [
        ("1", FailureCause.MALFORMED_PACKET),
        ("3", FailureCause.WRONG_WIFI_PASSWORD),
        ("6", FailureCause.CLOUD_CONNECTION_FAILED),
        ("100", FailureCause.CANCELLED_BY_USER),
        ("106", FailureCause.TIMEOUT),
        ("108", FailureCause.TOKEN_EXPIRED),
        ("113", FailureCause.ALREADY_BOUND),
        ("123", FailureCause.VISITOR_STRONG_BINDING),
        ("129", FailureCause.TOKEN_UNAVAILABLE),
        ("137", FailureCause.TIMEOUT),
        ("205", FailureCause.OTA_FAILED),
        ("407", FailureCause.ZIGBEE_COMBO_FAILED),
        ("600", FailureCause.DEVICE_UPGRADING),
        ("601", FailureCause.DEVICE_OFFLINE),
        (" 3 ", FailureCause.WRONG_WIFI_PASSWORD),
    ],
)
def test_documented_codes_map_to_their_cause(code: str, cause: FailureCause) -> None:
    failure = failure_for(code)
    assert failure.cause is cause
    assert failure.code == code.strip()
    assert failure.description == TUYA_PAIRING_CODES[int(code)][1]


@pytest.mark.parametrize(
    ("code", "cause"),
    [
        ("1010", FailureCause.TOKEN_EXPIRED),
        ("1012", FailureCause.TOKEN_VOID),
        ("1106", FailureCause.UNAUTHORIZED),
        ("2001", FailureCause.DEVICE_OFFLINE),
    ],
)
def test_openapi_codes_in_a_token_result_map_too(code: str, cause: FailureCause) -> None:
    assert failure_for(code).cause is cause


@pytest.mark.parametrize("code", ["0", "7", "99", "144", "602", "1013", "2002", "abc", "", "٣"])
def test_undocumented_codes_are_kept_as_unknown(code: str) -> None:
    failure = failure_for(code, "Tuya says no")
    assert failure.cause is FailureCause.UNKNOWN
    assert failure.code == (code.strip() or "unknown")
    assert failure.description == "Tuya says no"


def test_every_cause_but_the_derived_ones_is_reachable_from_a_code() -> None:
    reachable = {cause for cause, _ in [*TUYA_PAIRING_CODES.values(), *TUYA_OPENAPI_RESULT_CODES.values()]}
    derived = {FailureCause.BOUND_TO_ANOTHER_ACCOUNT, FailureCause.UNKNOWN}
    assert reachable | derived == set(FailureCause)
