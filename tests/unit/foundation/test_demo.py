"""`just demo`'s own logic, without servers: what the shadows must be (from the simulator's ground truth),
how a difference is reported, and the table it prints."""

from __future__ import annotations

from typing import Any

import pytest

from fleet_devstack.demo import (
    DpSpec,
    expected_shadows,
    format_table,
    format_value,
    mismatches,
    product_specs,
    shadow_rows,
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
