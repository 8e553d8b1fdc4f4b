"""Shadow merge rules: out-of-order, duplicates, scale, enum, bitmap; any delivery order gives one shadow."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet_status.domain.dp_schema import DpDefinition, DpSchema, DpType, InvalidDpValue, type_value
from fleet_status.domain.shadow import (
    BindingReport,
    BindingState,
    DeviceFacts,
    DpNameReport,
    DpReading,
    FirmwareReport,
    NameReport,
    PresenceReport,
    Shadow,
    StatusReport,
    merge,
)

pytestmark = pytest.mark.unit

SCHEMA = DpSchema(
    product_id="p1",
    dps={
        "switch_1": DpDefinition("switch_1", 1, DpType.BOOLEAN),
        "temp": DpDefinition("temp", 2, DpType.INTEGER, scale=1),
        "mode": DpDefinition("mode", 3, DpType.ENUM, range=("auto", "cool", "heat")),
        "fault": DpDefinition("fault", 4, DpType.BITMAP, labels=("sensor", "motor", "overheat")),
        "label": DpDefinition("label", 5, DpType.STRING, maxlen=8),
    },
)


def report(*readings: tuple[str, object, int]) -> DeviceFacts:
    return DeviceFacts("d1", (StatusReport(tuple(DpReading(c, v, t) for c, v, t in readings)),), "p1")


def facts(*items: object) -> DeviceFacts:
    return DeviceFacts("d1", tuple(items), "p1")  # type: ignore[arg-type]


def test_integer_is_scaled_and_keeps_the_raw_value() -> None:
    result = merge(Shadow("d1"), [report(("temp", 215, 10))], SCHEMA)
    dp = result.shadow.dps["temp"]
    assert (dp.value, dp.raw, dp.dp_id, dp.type) == (21.5, 215, 2, DpType.INTEGER)
    assert result.changed
    assert result.shadow.version == 1
    assert [(c.code, c.old, c.new.value) for c in result.dp_changes] == [("temp", None, 21.5)]


def test_enum_outside_its_range_is_refused_and_changes_nothing() -> None:
    result = merge(Shadow("d1", product_id="p1"), [report(("mode", "turbo", 10))], SCHEMA)
    assert not result.changed
    assert result.shadow.version == 0
    assert result.refused[0].code == "mode"
    assert result.history == []


def test_bitmap_decodes_to_flags_including_unlabelled_bits() -> None:
    typed = type_value(SCHEMA.get("fault"), 0b1010)
    assert typed.flags == {"sensor": False, "motor": True, "overheat": False, "bit3": True}
    assert typed.value == ["motor", "bit3"]


@pytest.mark.parametrize(
    ("code", "raw"),
    [("switch_1", 1), ("temp", "21"), ("temp", True), ("fault", -1), ("label", "way too long"), ("mode", 3)],
)
def test_values_of_the_wrong_type_are_refused(code: str, raw: object) -> None:
    with pytest.raises(InvalidDpValue):
        type_value(SCHEMA.get(code), raw)


def test_unknown_dp_and_missing_schema_keep_the_value_untyped() -> None:
    result = merge(Shadow("d1"), [report(("mystery", {"a": 1}, 5))], None)
    assert result.shadow.dps["mystery"].value == {"a": 1}
    assert result.shadow.dps["mystery"].type is None


def test_older_report_changes_nothing_but_goes_to_history() -> None:
    first = merge(Shadow("d1"), [report(("temp", 200, 20))], SCHEMA).shadow
    late = merge(first, [report(("temp", 100, 10))], SCHEMA)
    assert not late.changed
    assert late.shadow.dps["temp"].value == 20.0
    assert late.dp_changes == []
    assert [h.device_time_ms for h in late.history] == [10]


def test_duplicate_changes_nothing() -> None:
    once = merge(Shadow("d1"), [report(("switch_1", True, 5))], SCHEMA).shadow
    again = merge(once, [report(("switch_1", True, 5))], SCHEMA)
    assert not again.changed
    assert again.shadow.version == once.version


def test_newer_timestamp_with_same_value_is_no_change_event_but_moves_time() -> None:
    once = merge(Shadow("d1"), [report(("switch_1", True, 5))], SCHEMA).shadow
    later = merge(once, [report(("switch_1", True, 9))], SCHEMA)
    assert later.dp_changes == []
    assert later.shadow.dps["switch_1"].device_time_ms == 9
    assert later.changed  # the shadow holds the newer time (and last seen)


def test_presence_is_ordered_by_device_time_and_repeats_are_not_changes() -> None:
    s = merge(Shadow("d1"), [facts(PresenceReport(True, 10))], None)
    assert s.presence_change is not None
    assert s.presence_change.online
    stale = merge(s.shadow, [facts(PresenceReport(False, 5))], None)
    assert stale.presence_change is None
    assert stale.shadow.presence.online
    repeat = merge(s.shadow, [facts(PresenceReport(True, 11))], None)
    assert repeat.presence_change is None
    off = merge(s.shadow, [facts(PresenceReport(False, 12))], None)
    assert off.presence_change is not None
    assert not off.presence_change.online
    assert off.shadow.presence.last_seen_ms == 12


def test_binding_name_and_firmware() -> None:
    result = merge(
        Shadow("d1"),
        [
            facts(BindingReport(BindingState.BOUND, 100, "u1", "h1")),
            facts(BindingReport(BindingState.REMOVED, 200, "u1", "h1")),
            facts(BindingReport(BindingState.BOUND, 150, "u2", "h2")),
            facts(NameReport("kitchen", 10), NameReport("hall", 5)),
            facts(DpNameReport(1, "Power", 3)),
            facts(FirmwareReport(9, 2, 50, progress_percent=40)),
            facts(FirmwareReport(9, 3, 60, version="1.2.0")),
        ],
        None,
    )
    sh = result.shadow
    assert (sh.binding.state, sh.binding.owner_uid, sh.binding.home_id) == (BindingState.REMOVED, None, None)
    assert sh.name is not None
    assert sh.name.name == "kitchen"
    assert sh.dp_names[1].name == "Power"
    assert (sh.firmware[9].upgrade_status, sh.firmware[9].version) == (3, "1.2.0")


# --- property: any permutation with duplicates equals in-order delivery -------------------------------

codes = st.sampled_from(["switch_1", "temp", "mode", "fault", "label"])
values = {
    "switch_1": st.booleans(),
    "temp": st.integers(-500, 500),
    "mode": st.sampled_from(["auto", "cool", "heat", "bogus"]),
    "fault": st.integers(0, 15),
    "label": st.text(max_size=10),
}


@st.composite
def a_fact(draw: st.DrawFn) -> DeviceFacts:
    kind = draw(st.integers(0, 5))
    t = draw(st.integers(0, 30))  # small range: many equal timestamps, the hard case
    if kind <= 2:
        code = draw(codes)
        return report((code, draw(values[code]), t))
    if kind == 3:
        return facts(PresenceReport(draw(st.booleans()), t))
    if kind == 4:
        state = draw(st.sampled_from(list(BindingState)))
        return facts(BindingReport(state, t, draw(st.sampled_from(["u1", "u2"])), "h"))
    return facts(
        FirmwareReport(0, draw(st.integers(0, 4)), t, version=draw(st.sampled_from([None, "1.0", "2.0"])))
    )


@settings(max_examples=300, deadline=None)
@given(
    reports=st.lists(a_fact(), min_size=1, max_size=25),
    data=st.data(),
)
def test_any_permutation_with_duplicates_gives_the_in_order_shadow(
    reports: list[DeviceFacts], data: st.DataObject
) -> None:
    in_order = Shadow("d1")
    for r in reports:
        in_order = merge(in_order, [r], SCHEMA).shadow

    duplicated = reports + data.draw(st.lists(st.sampled_from(reports), max_size=10))
    shuffled = data.draw(st.permutations(duplicated))
    # delivered one by one, and in batches of any size: the same final state
    one_by_one = Shadow("d1")
    for r in shuffled:
        one_by_one = merge(one_by_one, [r], SCHEMA).shadow
    cut = data.draw(st.integers(0, len(shuffled)))
    batched = merge(merge(Shadow("d1"), shuffled[:cut], SCHEMA).shadow, shuffled[cut:], SCHEMA).shadow

    assert one_by_one.state_equals(in_order)
    assert batched.state_equals(in_order)
    # a replay of everything already merged changes nothing
    assert not merge(in_order, duplicated, SCHEMA).changed


@settings(max_examples=200, deadline=None)
@given(before=st.lists(a_fact(), max_size=15), after=st.lists(a_fact(), min_size=1, max_size=15))
def test_a_merge_never_changes_the_shadow_it_starts_from(
    before: list[DeviceFacts], after: list[DeviceFacts]
) -> None:
    """The writer keeps the shadow it merged from (its cache) until the write lands: a merge works on a copy
    (`Shadow.copy`, which shares the values and copies the records a merge changes in place)."""
    start = merge(Shadow("d1"), before, SCHEMA).shadow
    snapshot = copy.deepcopy(start)
    merge(start, after, SCHEMA)
    assert start == snapshot


def test_completing_a_reports_dp_id_changes_the_merged_copy_only() -> None:
    start = merge(Shadow("d1"), [report(("x", 1, 5))], None).shadow
    assert start.dps["x"].dp_id is None
    same_with_id = DeviceFacts("d1", (StatusReport((DpReading("x", 1, 5, 7),)),), "p1")
    merged = merge(start, [same_with_id], None).shadow
    assert merged.dps["x"].dp_id == 7
    assert start.dps["x"].dp_id is None
