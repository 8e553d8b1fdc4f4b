"""A stage's walk through the directory: order, wrap-around, cutoffs, the canary's cap, and the counter deltas
that keep the stage's counts equal to a recount at every step."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from fleet_contracts.ota import ReleaseStage
from fleet_ota.domain import sweep as sw
from fleet_ota.domain.sweep import DirectoryEntry, Sweep

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 29, 12, tzinfo=UTC)
OLD = NOW - timedelta(days=1)


def walk(planned: int, *, cap: bool = False, cutoff: datetime | None = NOW, start: str = "8") -> Sweep:
    return Sweep("r1", "EU", ReleaseStage.FULL, "EU:full:0", ("p|EU|0|1.0",), start, planned, cap, cutoff)


def entries(*names: str, activated: datetime = OLD) -> list[DirectoryEntry]:
    # positions chosen around the start "8": "1..." before it, "9..." after it
    return [DirectoryEntry(n, n.split("|")[1], activated) for n in names]


def totals(steps: list[sw.Step], planned: int) -> dict[str, int]:
    out = {"targeted": planned, "pending": planned, "cancelled": 0}
    for step in steps:
        for _, delta in step.deltas:
            for k, v in delta.items():
                out[k] = out.get(k, 0) + v
    return out


def test_positions_are_pseudo_random_and_unique_per_device_and_channel() -> None:
    assert sw.position("d1", 0) != sw.position("d1", 9)
    assert sw.position("d1", 0).endswith("|d1|0")
    ranks = sorted(sw.rank(f"d{i}") for i in range(100))
    assert ranks != [sw.rank(f"d{i}") for i in range(100)]  # not the ids' order
    assert sw.start_of("r1") == sw.start_of("r1") != sw.start_of("r2")


def test_a_walk_goes_from_its_start_to_the_end_then_from_the_beginning_back_to_the_start() -> None:
    s = walk(4)
    assert s.window() == ("8", None)
    step = sw.take(s, entries("9a|a|0", "9b|b|0"), False, set(), 10, NOW)
    assert step.taken == ("a", "b")
    s = step.sweep
    assert (s.phase, s.after, s.window()) == (1, "", ("", "8"))
    step = sw.take(s, entries("1c|c|0", "1d|d|0"), False, set(), 10, NOW)
    assert step.taken == ("c", "d")
    assert step.sweep.ended
    assert not sw.take(step.sweep, entries("9z|z|0"), False, set(), 10, NOW).taken
    assert [c.key for c in step.sweep.claims] == ["c0", "c2"]


def test_a_walk_skips_late_activations_and_excluded_devices_and_stops_at_its_limit() -> None:
    s = walk(10)
    page = (
        entries("9a|a|0")
        + entries("9b|b|0", activated=NOW + timedelta(seconds=1))
        + entries("9c|c|0", "9d|d|0", "9e|e|0")
    )
    step = sw.take(s, page, True, {"c"}, 2, NOW)
    assert step.taken == ("a", "d")
    assert (step.sweep.after, step.sweep.phase, step.sweep.claimed) == ("9d|d|0", 0, 2)
    step = sw.take(step.sweep, entries("9e|e|0"), False, set(), 2, NOW)  # the page goes on from "9d"
    assert step.taken == ("e",)
    assert step.sweep.phase == 1


def test_a_canary_stops_at_its_size_and_its_counts_settle_to_what_it_claimed() -> None:
    s = walk(3, cap=True)
    step = sw.take(s, entries("9a|a|0", "9b|b|0", "9c|c|0", "9d|d|0"), True, set(), 10, NOW)
    assert step.taken == ("a", "b", "c")
    assert step.sweep.ended
    assert step.deltas == ()  # exactly its size: nothing to correct
    # a canary whose region has fewer devices than estimated: the shortfall leaves the counts
    s = walk(5, cap=True)
    first = sw.take(s, entries("9a|a|0"), False, set(), 10, NOW)
    second = sw.take(first.sweep, entries("1b|b|0"), False, set(), 10, NOW)
    assert second.sweep.ended
    assert totals([first, second], 5) == {"targeted": 2, "pending": 2, "cancelled": 0}


def test_a_full_walk_counts_devices_found_beyond_its_estimate() -> None:
    s = walk(1)
    step = sw.take(s, entries("9a|a|0", "9b|b|0", "9c|c|0"), False, set(), 10, NOW)
    assert step.taken == ("a", "b", "c")
    assert totals([step], 1) == {"targeted": 3, "pending": 3, "cancelled": 0}
    end = sw.take(step.sweep, [], False, set(), 10, NOW)
    assert end.sweep.ended
    assert totals([step, end], 1)["targeted"] == 3


def test_filling_a_claim_takes_off_ids_another_stage_had_and_is_idempotent() -> None:
    step = sw.take(walk(3), entries("9a|a|0", "9b|b|0", "9c|c|0"), True, set(), 10, NOW)
    filled = sw.fill(step.sweep, "c0", other_stage=1)
    assert filled.sweep.claims == ()
    assert totals([step, filled], 3) == {"targeted": 2, "pending": 2, "cancelled": 0}
    assert sw.fill(filled.sweep, "c0", other_stage=1).sweep == filled.sweep  # a repair filled it too


def test_stopping_cancels_what_was_planned_and_not_claimed() -> None:
    step = sw.take(walk(10), entries("9a|a|0", "9b|b|0"), True, set(), 2, NOW)
    stopped = sw.stop(step.sweep)
    assert (stopped.sweep.ended, stopped.sweep.cancelled) == (True, 8)
    assert totals([step, stopped], 10) == {"targeted": 10, "pending": 2, "cancelled": 8}
    assert stopped.sweep.open  # its claim is not confirmed yet
    assert sw.stop(stopped.sweep).sweep == stopped.sweep
    assert not sw.take(stopped.sweep, entries("9c|c|0"), False, set(), 2, NOW).taken


def test_a_promoted_stage_ends_its_walk_and_gives_up_what_it_had_not_reached() -> None:
    step = sw.take(walk(10, cap=True), entries("9a|a|0", "9b|b|0"), True, set(), 2, NOW)
    ended = sw.end(step.sweep)
    assert ended.sweep.ended
    assert totals([step, ended], 10) == {"targeted": 2, "pending": 2, "cancelled": 0}


def test_a_claim_never_confirmed_is_stale_after_the_grace() -> None:
    step = sw.take(walk(10), entries("9a|a|0"), True, set(), 2, NOW)
    assert sw.stale(step.sweep, NOW - timedelta(seconds=1)) is None
    claim = sw.stale(step.sweep, NOW)
    assert claim is not None
    assert claim.device_ids == ("a",)
