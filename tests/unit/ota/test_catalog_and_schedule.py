"""Firmware catalog rules (versions, validation, immutability, withdrawal) and the dispatch schedule."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, time, timedelta

import pytest

from fleet_contracts.ota import UpgradeType
from fleet_ota.domain import firmware as fw
from fleet_ota.domain.firmware import CatalogError, FirmwareSpec
from fleet_ota.domain.schedule import DispatchRate, Schedule, ScheduleError, Throttle, Window, due

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 29, 12, tzinfo=UTC)  # a Sunday
SPEC = FirmwareSpec(
    product_id="p1",
    channel=9,
    version="1.2.0",
    size_bytes=1024,
    md5="0" * 32,
    signature="sig",
    url="https://cdn.example.com/fw.bin",
    upgrade_type=UpgradeType.SILENT,
    packet_timeout_s=60,
)


@pytest.mark.parametrize(
    ("a", "b", "lower"),
    [("1.9", "1.10", True), ("1.2", "1.2.0", False), ("2.0.0", "10.0", True), ("1.2.1", "1.2", False)],
)
def test_versions_compare_numerically(a: str, b: str, lower: bool) -> None:
    assert fw.is_lower(a, b) is lower


@pytest.mark.parametrize("bad", ["", "1.", "v1.2", "1..2", "1.2.x", "1.2.3.4.5.6.7"])
def test_malformed_versions_are_refused(bad: str) -> None:
    with pytest.raises(CatalogError):
        fw.parse_version(bad)


@pytest.mark.parametrize("channel", [0, 1, 3, 9, 10, 19])
def test_known_channels_are_accepted(channel: int) -> None:
    assert fw.register(replace(SPEC, channel=channel), None, by="ops", now=NOW).new


@pytest.mark.parametrize(
    "change",
    [
        {"channel": 2},
        {"channel": 20},
        {"size_bytes": 0},
        {"size_bytes": (1 << 31) + 1},
        {"md5": "A" * 32},
        {"signature": ""},
        {"url": "http://insecure/fw.bin"},
        {"packet_timeout_s": 9},
        {"packet_timeout_s": 3601},
        {"version": "1.x"},
    ],
)
def test_invalid_firmware_is_refused(change: dict[str, object]) -> None:
    with pytest.raises(CatalogError):
        fw.register(replace(SPEC, **change), None, by="ops", now=NOW)  # type: ignore[arg-type]


def test_registration_is_idempotent_and_entries_are_immutable() -> None:
    first = fw.register(SPEC, None, by="ops", now=NOW).firmware
    assert first.firmware_id == "p1:9:1.2"
    assert fw.firmware_id("p1", 9, "1.2.0.0") == first.firmware_id
    again = fw.register(SPEC, first, by="other", now=NOW + timedelta(days=1))
    assert (again.new, again.firmware) == (False, first)
    with pytest.raises(CatalogError, match="immutable"):
        fw.register(replace(SPEC, md5="1" * 32), first, by="ops", now=NOW)


def test_withdraw_is_refused_while_a_release_is_active() -> None:
    entry = fw.register(SPEC, None, by="ops", now=NOW).firmware
    with pytest.raises(CatalogError, match="stop them first"):
        fw.withdraw(entry, active_releases=1, now=NOW)
    gone = fw.withdraw(entry, active_releases=0, now=NOW)
    assert gone.withdrawn
    assert fw.withdraw(gone, active_releases=0, now=NOW + timedelta(days=1)) == gone
    with pytest.raises(CatalogError):
        fw.register(SPEC, gone, by="ops", now=NOW)  # withdrawn: republish as a new version


def test_nothing_is_dispatched_before_the_start_time() -> None:
    s = Schedule(start_at=NOW)
    assert not s.allows(NOW - timedelta(seconds=1))
    assert s.allows(NOW)


def test_a_window_in_the_regions_time_zone() -> None:
    s = Schedule(window=Window(time(2), time(4)), time_zone="Asia/Shanghai")  # 02:00-04:00 = 18:00-20:00 UTC
    assert s.allows(datetime(2026, 11, 29, 18, tzinfo=UTC))
    assert not s.allows(datetime(2026, 11, 29, 20, tzinfo=UTC))
    assert not s.allows(datetime(2026, 11, 29, 17, 59, tzinfo=UTC))


def test_a_window_over_midnight_belongs_to_the_day_it_opened() -> None:
    sunday_night = Window(time(22), time(4), weekdays=frozenset({6}))
    s = Schedule(window=sunday_night)
    assert s.allows(datetime(2026, 11, 29, 23, tzinfo=UTC))  # Sunday 23:00
    assert s.allows(datetime(2026, 11, 30, 3, tzinfo=UTC))  # Monday 03:00, still Sunday's window
    assert not s.allows(datetime(2026, 11, 30, 23, tzinfo=UTC))  # Monday night
    assert not s.allows(datetime(2026, 11, 29, 3, tzinfo=UTC))  # Sunday 03:00 is Saturday's window


@pytest.mark.parametrize(
    "make",
    [
        lambda: Schedule(time_zone="Mars/Olympus"),
        lambda: Schedule(start_at=datetime(2026, 1, 1)),
        lambda: Window(time(1), time(1)),
        lambda: Window(time(1), time(2), weekdays=frozenset({7})),
        lambda: DispatchRate(per_minute=0),
        lambda: DispatchRate(jitter=1),
    ],
)
def test_invalid_schedules_are_refused(make: object) -> None:
    with pytest.raises(ScheduleError):
        make()  # type: ignore[operator]


def test_dispatch_gap_keeps_the_mean_rate_with_jitter() -> None:
    rate = DispatchRate(per_minute=120, jitter=0.2)
    assert rate.gap(0.5) == timedelta(seconds=0.5)
    assert rate.gap(0.0) == timedelta(seconds=0.4)
    assert rate.gap(0.999999).total_seconds() == pytest.approx(0.6, abs=1e-5)


def test_a_round_gets_the_slots_up_to_a_little_ahead_and_a_missed_slot_is_lost() -> None:
    rate = DispatchRate(60)  # one a second
    # never dispatched: from now, every slot up to 2.5 s ahead
    assert due(None, 100.0, rate, lambda: 0.5, most=50, ahead_s=2.5) == (100.0, [1.0, 1.0, 1.0])
    # the schedule is ahead of now: slots start there
    assert due(101.5, 100.0, rate, lambda: 0.5, most=50, ahead_s=2.0) == (101.5, [1.0])
    # slots far in the past are lost, not sent in a burst: at most one gap late
    assert due(50.0, 100.0, rate, lambda: 0.5, most=50, ahead_s=0.0) == (99.0, [1.0, 1.0])
    assert due(None, 100.0, rate, lambda: 0.5, most=2, ahead_s=10.0)[1] == [1.0, 1.0]  # at most `most`
    # a throttled region's gaps are stretched
    assert due(None, 100.0, rate, lambda: 0.5, most=50, ahead_s=2.0, slower=1.5) == (100.0, [1.5, 1.5])


def test_the_throttle_slows_on_refusals_and_recovers_on_accepted_commands_never_past_the_rate() -> None:
    t = Throttle()
    t.accepted()
    assert t.factor == 1.0
    t.refused()
    t.refused()
    assert t.factor == pytest.approx(1.02**2)
    for _ in range(10_000):
        t.accepted()
    assert t.factor == 1.0
    for _ in range(1000):
        t.refused()
    assert t.factor == t.most


def test_sort_keys_order_like_versions() -> None:
    versions = ["1.10", "1.9", "2", "1.2.0", "1.2", "10.0.1", "0.9.9"]
    by_key = sorted(versions, key=fw.sort_key)
    by_value = sorted(versions, key=fw.parse_version)
    assert by_key == by_value
    assert fw.sort_key("1.2") == fw.sort_key("1.2.0")


def test_an_isolated_refusal_slows_nothing_repeated_ones_do() -> None:
    """With `tolerated`, a 1199 after at least that many accepted commands is jitter in transit (nothing
    slows); one within that many of the last refusal is a pace above the limit (slower by a step)."""
    t = Throttle(tolerated=20)
    t.refused()  # the first: isolated
    assert t.factor == 1.0
    for _ in range(19):
        t.accepted()
    t.refused()  # 19 accepted since the last: repeated
    assert t.factor == pytest.approx(1.02)
    for _ in range(20):
        t.accepted()
    before = t.factor
    t.refused()  # 20 accepted since the last: isolated again
    assert t.factor == before
