"""`just demo`'s own logic, without servers: what the shadows must be (from the simulator's ground truth),
how a difference is reported, and the table it prints; which home and device pairing uses, the quota that
leaves room for all but one device, and what pairing and unbinding must have come to."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from fleet_devstack.demo import (
    OTA_WANT,
    DemoError,
    DpSpec,
    PairingPick,
    demo_limit,
    expected_shadows,
    firmware_entry,
    format_table,
    format_value,
    mismatches,
    ota_inventory,
    ota_problems,
    ota_rows,
    ota_settled,
    pairing_problems,
    pairing_rows,
    pick_for_pairing,
    product_specs,
    shadow_rows,
    unbinding_problems,
    unbinding_rows,
    url_of,
)

pytestmark = pytest.mark.unit

PLUG = "sim0plug0cz00001"
PRODUCTS = [
    {
        "product_id": PLUG,
        "name": "Smart Plug",
        "dps": [
            {"code": "switch_1", "type": "bool", "values": "{}"},
            {"code": "cur_power", "type": "value", "values": '{"unit":"W","min":0,"max":50000,"scale":1}'},
            {"code": "fault", "type": "bitmap", "values": '{"label":["ov_cr","ov_vol"],"maxlen":2}'},
        ],
    }
]


def truth_device(online: bool, **dps: tuple[Any, int]) -> dict[str, Any]:
    return {
        "product_id": PLUG,
        "online": online,
        "dps": {code: {"dp_id": n, "value": v, "t": t} for n, (code, (v, t)) in enumerate(dps.items())},
    }


def shadow(device: str, online: bool | None, **dps: tuple[Any, Any, int]) -> dict[str, Any]:
    return {
        "device_id": device,
        "product_id": PLUG,
        "presence": {"online": online},
        "dps": {code: {"value": v, "raw": r, "device_time_ms": t} for code, (v, r, t) in dps.items()},
    }


def test_units_come_from_the_catalogue() -> None:
    specs = product_specs(PRODUCTS)
    assert specs[PLUG]["cur_power"] == DpSpec("cur_power", "value", "W")
    assert specs[PLUG]["switch_1"].unit == ""


def test_only_reported_dps_are_expected() -> None:
    before = {"d1": truth_device(False, switch_1=(False, 100), cur_power=(0, 100))}
    after = {"d1": truth_device(True, switch_1=(True, 205), cur_power=(0, 100))}
    expected = expected_shadows(after, before)
    assert expected["d1"].online is True
    assert expected["d1"].dps == {"switch_1": (True, 205)}  # cur_power kept its initial, unreported value


def test_matching_shadows_compare_raw_values_and_device_times() -> None:
    before = {"d1": truth_device(False, switch_1=(False, 1), cur_power=(0, 1))}
    expected = expected_shadows({"d1": truth_device(True, switch_1=(True, 5), cur_power=(1234, 6))}, before)
    good = {"d1": shadow("d1", True, switch_1=(True, True, 5), cur_power=(123.4, 1234, 6))}
    assert mismatches(good, expected) == []


def test_each_difference_is_named() -> None:
    before = {
        "d1": truth_device(False, switch_1=(False, 1), cur_power=(0, 1)),
        "d2": truth_device(False, switch_1=(False, 1), cur_power=(0, 1)),
    }
    after = {
        "d1": truth_device(True, switch_1=(True, 5), cur_power=(1234, 6)),
        "d2": truth_device(False, switch_1=(True, 5), cur_power=(0, 1)),
    }
    expected = expected_shadows(after, before)
    shadows = {"d1": shadow("d1", False, switch_1=(True, True, 4))}
    problems = mismatches(shadows, expected)
    assert problems == [
        "d1: online False != True",
        "d1: cur_power missing",
        "d1: switch_1=True@4 != True@5",
        "d2: no shadow yet",
    ]


@pytest.mark.parametrize(
    ("value", "spec", "text"),
    [
        (True, None, "on"),
        (False, DpSpec("switch_1", "bool"), "off"),
        (378.3, DpSpec("cur_power", "value", "W"), "378.3 W"),
        (26174, DpSpec("cur_current", "value", "mA"), "26174 mA"),
        (["ov_cr"], DpSpec("fault", "bitmap"), "[ov_cr]"),
        (None, None, "-"),
        ("a" * 30, None, "a" * 15 + "…"),
    ],
)
def test_values_are_readable(value: Any, spec: DpSpec | None, text: str) -> None:
    assert format_value(value, spec) == text


def test_the_table_has_one_row_per_shadow_with_product_names_and_units() -> None:
    rows = shadow_rows(
        [shadow("d1", True, switch_1=(True, True, 5), cur_power=(12.5, 125, 6)), shadow("d2", None)],
        product_specs(PRODUCTS),
        {PLUG: "Smart Plug"},
    )
    assert rows == [
        ("d1", "Smart Plug", "online", "cur_power=12.5 W, switch_1=on"),
        ("d2", "Smart Plug", "?", "-"),
    ]
    table = format_table(("device", "product", "state", "DPs"), rows).splitlines()
    assert table[0].split() == ["device", "product", "state", "DPs"]
    assert table[2] == "d1      Smart Plug  online  cur_power=12.5 W, switch_1=on"
    assert len(table) == 4


# -- pairing and unbinding -------------------------------------------------------------------------------

LIFECYCLE_FLEET = {
    "homes": [{"home_id": "h1", "owner_uid": "ay1"}, {"home_id": "h2", "owner_uid": "ay2"}],
    "devices": {
        "d3": {"bound": True, "product_id": PLUG},
        "d2": {"bound": False, "product_id": PLUG},
        "d1": {"bound": False, "product_id": PLUG},
    },
}


def test_pairing_takes_the_first_home_and_a_device_nobody_owns() -> None:
    assert pick_for_pairing(LIFECYCLE_FLEET) == PairingPick("ay1", "h1", "d1")


def test_a_fleet_without_a_free_device_is_named() -> None:
    bound_only = {**LIFECYCLE_FLEET, "devices": {"d3": {"bound": True}}}
    with pytest.raises(DemoError, match="0 free devices"):
        pick_for_pairing(bound_only)


def session(state: str, *devices: dict[str, Any]) -> dict[str, Any]:
    return {
        "session_id": "ps_1",
        "state": state,
        "issued_at": "2026-11-29T10:00:00+00:00",
        "devices": list(devices),
    }


PAIRED = {"key": "d1", "device_id": "d1", "outcome": "paired", "at": "2026-11-29T10:00:01.700000+00:00"}
WRONG_WIFI = {
    "key": "d1",
    "device_id": "d1",
    "outcome": "failed",
    "at": "2026-11-29T10:00:03+00:00",
    "failure": {"code": "3", "cause": "wrong_wifi_password"},
}


def test_a_paired_device_is_a_row_with_its_time_from_the_token() -> None:
    assert pairing_rows(session("succeeded", PAIRED)) == [("ps_1", "d1", "paired", "1.7s")]
    assert pairing_rows(session("failed", WRONG_WIFI)) == [
        ("ps_1", "d1", "failed (wrong_wifi_password, Tuya 3)", "3.0s")
    ]


def test_pairing_succeeds_only_with_exactly_the_provisioned_device_paired() -> None:
    assert pairing_problems(session("succeeded", PAIRED), "d1") == []
    assert pairing_problems(session("failed", WRONG_WIFI), "d1") == [
        "session state failed != succeeded",
        "paired [] != [d1]",
    ]
    assert pairing_problems(session("active"), "d1") == [
        "session state active != succeeded",
        "paired [] != [d1]",
    ]


def test_the_account_limit_leaves_room_for_all_but_one_device_after_earlier_runs() -> None:
    assert demo_limit(0, 5) == 4
    assert demo_limit(8, 5) == 12  # two earlier runs today used 4 each


def record(device: str, result: str, cause: str | None = None) -> dict[str, Any]:
    return {"device_id": device, "product_id": PLUG, "result": result, "cause": cause, "detail": None}


def test_unbinding_expects_all_but_one_unbound_and_one_refused_for_quota() -> None:
    good = [record("d2", "unbound"), record("d1", "unbound"), record("d3", "refused", "quota_exceeded")]
    assert unbinding_problems(good, 3) == []
    assert unbinding_rows(good, {PLUG: "Smart Plug"}) == [
        ("d1", "Smart Plug", "unbound", "-"),
        ("d2", "Smart Plug", "unbound", "-"),
        ("d3", "Smart Plug", "refused", "quota_exceeded"),
    ]


def test_each_unexpected_unbinding_result_is_named() -> None:
    bad = [record("d1", "unbound"), record("d2", "refused", "unauthorized")]
    assert unbinding_problems(bad, 3) == [
        "2 results for 3 devices",
        "1 unbound, not 2",
        "0 refused for quota, not 1",
        "d2: refused (unauthorized)",
    ]


def test_a_service_started_elsewhere_is_found_by_its_url_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLEET_UNBINDING_URL", raising=False)
    assert url_of("unbinding") == "http://127.0.0.1:8004"
    monkeypatch.setenv("FLEET_UNBINDING_URL", "http://127.0.0.1:19614")
    assert url_of("unbinding") == "http://127.0.0.1:19614"


# -- OTA ---------------------------------------------------------------------------------------------------


def test_the_inventory_takes_the_activation_time_or_now_and_every_channel_version() -> None:
    now = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    devices = [
        {
            "device_id": "d1",
            "product_id": PLUG,
            "region": "eu",
            "active_time": 1_700_000_000,
            "firmware": {"0": "1.2.0"},
        },
        {
            "device_id": "d2",
            "product_id": PLUG,
            "region": "us",
            "active_time": 0,
            "firmware": {"0": "1.2.0", "9": "1.0"},
        },
    ]
    assert ota_inventory(devices, now) == [
        {
            "device_id": "d1",
            "product_id": PLUG,
            "region": "eu",
            "activated_at": "2023-11-14T22:13:20+00:00",
            "versions": {"0": "1.2.0"},
        },
        {
            "device_id": "d2",
            "product_id": PLUG,
            "region": "us",
            "activated_at": now.isoformat(),
            "versions": {"0": "1.2.0", "9": "1.0"},
        },
    ]


def test_the_firmware_entry_is_stable_per_version() -> None:
    entry = firmware_entry(PLUG, "1.3.0")
    assert entry == firmware_entry(PLUG, "1.3.0")  # registering it again on a later run is the same entry
    assert len(entry["md5"]) == 32
    assert entry["md5"] != firmware_entry(PLUG, "1.4.0")["md5"]


def release(eu: str, us: str, *, eu_stages: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    full = {
        "stage": "full",
        "targeted": 3,
        "pending": 1,
        "upgrading": 0,
        "waiting": 0,
        "succeeded": 0,
        "failed": 2,
    }
    return {
        "regions": [
            {
                "region": "eu",
                "status": eu,
                "stage": "full",
                "stages": [full] if eu_stages is None else eu_stages,
            },
            {"region": "us", "status": us, "stage": None, "stages": []},
        ]
    }


def test_the_watch_ends_once_every_region_is_final_and_names_the_unexpected_ones() -> None:
    assert not ota_settled(release("running", "completed"), OTA_WANT)
    assert ota_settled(release("halted", "completed"), OTA_WANT)
    assert ota_problems(release("halted", "completed"), OTA_WANT) == []
    assert ota_settled(release("completed", "completed"), OTA_WANT)
    assert ota_problems(release("completed", "running"), OTA_WANT) == [
        "region eu is completed, not halted",
        "region us is running, not completed",
    ]


def test_the_progress_table_has_a_row_per_region_and_stage_with_open_upgrades() -> None:
    assert ota_rows(release("halted", "scheduled")) == [
        ("eu", "halted", "full", "3", "0", "2", "1"),
        ("us", "scheduled", "-", "0", "0", "0", "0"),
    ]
