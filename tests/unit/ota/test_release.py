"""The region rollout state machine: stages, thresholds with and without a minimum sample, canary sizing,
late joiners, pause/resume/stop, and the one-channel rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from fractions import Fraction

import pytest

from fleet_contracts.ota import ReleaseHalted, ReleaseOutcome, ReleasePromoted, ReleaseStage, ReleaseStarted
from fleet_ota.domain import release as rel
from fleet_ota.domain.release import (
    Canary,
    Complete,
    Halt,
    Hold,
    Promote,
    RegionPlan,
    RegionRollout,
    ReleaseError,
    ReleaseTarget,
    RolloutStatus,
    StageCounts,
    Threshold,
)
from fleet_ota.domain.targeting import DeviceRecord, may_command, stage_targets

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 29, 12, tzinfo=UTC)
TARGET = ReleaseTarget("p1:0:1.2", "p1", 0, "1.2.0")
V, C, F = ReleaseStage.VERIFICATION, ReleaseStage.CANARY, ReleaseStage.FULL


def plan(**kw: object) -> RegionPlan:
    defaults: dict[str, object] = {
        "region": "EU",
        "verification_devices": ("v1", "v2"),
        "canary": Canary(quantity=10),
        "promote_at": Threshold(0.9, min_sample=5),
        "halt_at": Threshold(0.3, min_sample=5),
    }
    defaults.update(kw)
    return RegionPlan(**defaults)  # type: ignore[arg-type]


def started(p: RegionPlan | None = None) -> RegionRollout:
    return rel.start(RegionRollout("r1", TARGET, p or plan()), targets=2, by="ops", now=NOW).rollout


def at_stage(stage: ReleaseStage, p: RegionPlan | None = None) -> RegionRollout:
    r = started(p)
    while r.stage != stage:
        r = rel.promote(r, targets=0, now=NOW, by="ops").rollout
    return r


def test_start_runs_the_first_configured_stage_and_says_so() -> None:
    t = rel.start(RegionRollout("r1", TARGET, plan()), targets=2, by="ops", now=NOW)
    assert (t.rollout.status, t.rollout.stage, t.rollout.version) == (RolloutStatus.RUNNING, V, 1)
    [event] = t.events
    assert isinstance(event, ReleaseStarted)
    assert (event.tuya_region, event.stage, event.target_devices) == ("EU", V, 2)
    assert not rel.start(t.rollout, targets=2, by="ops", now=NOW).events  # idempotent


@pytest.mark.parametrize(
    ("kw", "stages"),
    [
        ({}, [V, C, F]),
        ({"verification_devices": ()}, [C, F]),
        ({"canary": None}, [V, F]),
        ({"verification_devices": (), "canary": None}, [F]),
    ],
)
def test_stages_without_devices_are_skipped(kw: dict[str, object], stages: list[ReleaseStage]) -> None:
    p = plan(**kw)
    seen = [p.first_stage()]
    while seen[-1] != F:
        seen.append(p.next_stage(seen[-1]))
    assert seen == stages


def test_promotion_waits_for_the_minimum_sample() -> None:
    r = at_stage(C)
    assert rel.decide(r, StageCounts(targeted=10, succeeded=4, upgrading=6)) == Hold()
    assert rel.decide(r, StageCounts(targeted=10, succeeded=5, upgrading=5)) == Promote(F, 1.0, 5)


def test_promotion_needs_the_success_rate() -> None:
    r = at_stage(C, plan(halt_at=None))
    assert rel.decide(r, StageCounts(targeted=10, succeeded=8, failed=2)) == Hold()  # 80% < 90%
    assert rel.decide(r, StageCounts(targeted=10, succeeded=9, failed=1)) == Promote(F, 0.9, 10)


def test_a_threshold_without_minimum_sample_still_needs_one_settled_device() -> None:
    r = at_stage(C, plan(promote_at=Threshold(0.5), halt_at=Threshold(0.5)))
    assert rel.decide(r, StageCounts(targeted=10, upgrading=10)) == Hold()
    assert rel.decide(r, StageCounts(targeted=10, succeeded=1, upgrading=9)) == Promote(F, 1.0, 1)
    assert rel.decide(r, StageCounts(targeted=10, failed=1, upgrading=9)) == Halt(1.0, 1)


def test_verification_promotes_only_once_every_device_settled() -> None:
    r = started(plan(promote_at=Threshold(1.0, min_sample=1)))
    assert rel.decide(r, StageCounts(targeted=2, succeeded=1, waiting=1)) == Hold()
    assert rel.decide(r, StageCounts(targeted=2, succeeded=2)) == Promote(C, 1.0, 2)


def test_manual_promotion_when_no_threshold() -> None:
    r = at_stage(C, plan(promote_at=None))
    assert rel.decide(r, StageCounts(targeted=10, succeeded=10)) == Hold()
    t = rel.promote(r, targets=500, now=NOW + timedelta(hours=1), by="alice")
    [event] = t.events
    assert isinstance(event, ReleasePromoted)
    assert (event.from_stage, event.to_stage, event.automatic, event.promoted_by) == (C, F, False, "alice")
    assert t.rollout.full_started_at == NOW + timedelta(hours=1)


def test_automatic_promotion_records_the_rate_and_sample() -> None:
    r = at_stage(C)
    decision = rel.decide(r, StageCounts(targeted=10, succeeded=10))
    assert isinstance(decision, Promote)
    [event] = rel.promote(r, targets=90, now=NOW, decision=decision).events
    assert isinstance(event, ReleasePromoted)
    assert (event.automatic, event.success_rate, event.sample_size, event.target_devices) == (
        True,
        1.0,
        10,
        90,
    )


def test_halt_on_failure_threshold_with_minimum_sample_in_this_region_only() -> None:
    eu, us = at_stage(C), at_stage(C, plan(region="US"))
    counts = StageCounts(targeted=10, succeeded=3, failed=2, upgrading=5)  # 40% failed over 5
    decision = rel.decide(eu, counts)
    assert decision == Halt(0.4, 5)
    assert isinstance(decision, Halt)
    t = rel.halt(eu, decision)
    assert t.rollout.status == RolloutStatus.HALTED
    [event] = t.events
    assert isinstance(event, ReleaseHalted)
    assert (event.tuya_region, event.automatic, event.sample_size) == ("EU", True, 5)
    assert us.status == RolloutStatus.RUNNING
    assert rel.decide(eu, StageCounts(targeted=10, succeeded=3, failed=1)) == Hold()  # 4 < min sample


def test_failures_are_judged_over_the_regions_stages_together() -> None:
    """The issue's case: a region failing 30% whose canary of 30 passed by chance (5 failures, under 20%),
    then a full stage whose own settled devices (10) are below the minimum sample of 20."""
    p = plan(verification_devices=(), promote_at=Threshold(0.8, 20), halt_at=Threshold(0.2, 20))
    canary = StageCounts(targeted=30, succeeded=25, failed=5)
    assert rel.decide(at_stage(C, p), canary) == Promote(F, 25 / 30, 30)
    full = at_stage(F, p)
    early = StageCounts(targeted=20, succeeded=8, failed=2, upgrading=10)
    later = StageCounts(targeted=20, succeeded=7, failed=3, upgrading=10)
    assert rel.decide(full, later) == Hold()  # judged per stage: 3 of 10, below the minimum sample
    assert rel.decide(full, early, canary + early) == Hold()  # 7 of 40: 17.5%
    assert rel.decide(full, later, canary + later) == Halt(0.2, 40)  # 8 of 40: the region halts
    # at the edge: the minimum sample counts the region's settled devices, not the stage's
    edge = plan(verification_devices=(), promote_at=None, halt_at=Threshold(0.2, 41))
    assert rel.decide(at_stage(F, edge), later, canary + later) == Hold()


def test_counts_add_up_per_bucket() -> None:
    a = StageCounts(targeted=5, pending=1, upgrading=1, waiting=1, succeeded=1, failed=1)
    b = StageCounts(targeted=3, cancelled=3)
    assert a + b == StageCounts(8, 1, 1, 1, 1, 1, 3)


def test_halt_takes_precedence_over_promotion_and_applies_while_paused() -> None:
    p = plan(promote_at=Threshold(0.5, 1), halt_at=Threshold(0.5, 1))
    r = at_stage(C, p)
    assert isinstance(rel.decide(r, StageCounts(targeted=2, succeeded=1, failed=1)), Halt)
    paused = rel.pause(r, by="ops").rollout
    assert isinstance(rel.decide(paused, StageCounts(targeted=2, failed=1)), Halt)
    assert rel.decide(paused, StageCounts(targeted=2, succeeded=2)) == Hold()  # no promotion while paused


def test_full_stage_completes_when_nothing_is_open() -> None:
    r = at_stage(F)
    assert rel.decide(r, StageCounts(targeted=3, succeeded=2, waiting=1)) == Hold()
    assert rel.decide(r, StageCounts(targeted=3, succeeded=2, failed=1)) == Complete()  # below min sample
    assert rel.decide(r, StageCounts(targeted=10, succeeded=9, cancelled=1)) == Complete()
    t = rel.finish(r, StageCounts(targeted=10, succeeded=9, cancelled=1), stopped=False)
    assert t.rollout.status == RolloutStatus.COMPLETED
    [event] = t.events
    assert event.outcome == ReleaseOutcome.COMPLETED  # type: ignore[attr-defined]


def test_pause_resume_stop_and_their_refusals() -> None:
    r = at_stage(C)
    paused = rel.pause(r, by="ops", reason="night").rollout
    assert paused.status == RolloutStatus.PAUSED
    assert not paused.dispatching
    assert not rel.pause(paused, by="ops").events  # idempotent
    resumed = rel.resume(paused, by="ops").rollout
    assert resumed.status == RolloutStatus.RUNNING
    assert not rel.resume(resumed, by="ops").events
    stopped = rel.finish(resumed, StageCounts(targeted=5, succeeded=1, pending=4), stopped=True)
    assert stopped.rollout.status == RolloutStatus.STOPPED
    assert stopped.events[0].not_attempted == 4  # type: ignore[attr-defined]
    with pytest.raises(ReleaseError):
        rel.resume(stopped.rollout, by="ops")
    with pytest.raises(ReleaseError):
        rel.pause(stopped.rollout, by="ops")
    assert not rel.finish(stopped.rollout, StageCounts(), stopped=True).events


def test_a_halted_region_resumes_only_by_an_operator_and_cannot_be_promoted() -> None:
    r = rel.halt(at_stage(C), Halt(0.5, 10)).rollout
    with pytest.raises(ReleaseError):
        rel.promote(r, targets=0, now=NOW, by="ops")
    assert rel.resume(r, by="ops").rollout.status == RolloutStatus.RUNNING


def test_a_resumed_region_is_judged_on_what_settles_after_the_resume() -> None:
    """Halted at 4 failed of 10 (30%, sample 5); resumed, the same counters do not halt it again, and from
    then on only failures since the resume count, with the minimum sample counted from the resume too."""
    halted_at = StageCounts(targeted=20, failed=4, succeeded=6, pending=10)
    r = at_stage(C)
    assert rel.decide(r, halted_at) == Halt(0.4, 10)
    r = rel.halt(r, Halt(0.4, 10)).rollout
    resumed = rel.resume(r, by="ops", region=halted_at).rollout
    assert (resumed.status, resumed.halt_baseline) == (RolloutStatus.RUNNING, (4, 10))
    assert rel.decide(resumed, halted_at) == Hold()
    # 4 more settled since, all failed: under the minimum sample of 5
    assert rel.decide(resumed, halted_at + StageCounts(failed=4, pending=-4)) == Hold()
    # the fifth settles: 4 failed of 5 since the resume
    assert rel.decide(resumed, halted_at + StageCounts(failed=4, succeeded=1, pending=-5)) == Halt(0.8, 5)
    # at the edge: 3 of 10 since the resume is 30%, the threshold; 2 of 10 is not
    just = halted_at + StageCounts(failed=3, succeeded=7, pending=-10)
    assert rel.decide(resumed, just) == Halt(0.3, 10)
    below = halted_at + StageCounts(failed=2, succeeded=8, pending=-10)
    assert rel.decide(resumed, below) == Hold()


def test_resuming_a_paused_region_keeps_its_baseline() -> None:
    r = rel.halt(at_stage(C), Halt(0.5, 10)).rollout
    r = rel.resume(r, by="ops", region=StageCounts(failed=5, succeeded=5)).rollout
    r = rel.pause(r, by="ops").rollout
    assert rel.resume(r, by="ops", region=StageCounts(failed=9, succeeded=9)).rollout.halt_baseline == (5, 10)


def test_full_cannot_be_promoted() -> None:
    with pytest.raises(ReleaseError):
        rel.promote(at_stage(F), targets=0, now=NOW, by="ops")


# --- canary sizing ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ratio", "eligible", "size"),
    [
        ("0.1", 30, 3),
        ("0.1", 31, 4),
        ("0.1", 1, 1),
        ("0.1", 0, 0),
        ("1", 7, 7),
        ("1/3", 10, 4),
        ("0.07", 100, 7),
    ],
)
def test_canary_by_ratio_rounds_up_exactly(ratio: str, eligible: int, size: int) -> None:
    assert Canary(ratio=rel.ratio(ratio)).size(eligible) == size


@pytest.mark.parametrize(("quantity", "eligible", "size"), [(10, 100, 10), (10, 3, 3), (1, 0, 0)])
def test_canary_by_quantity_is_capped_by_the_eligible(quantity: int, eligible: int, size: int) -> None:
    assert Canary(quantity=quantity).size(eligible) == size


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"ratio": Fraction(1, 2), "quantity": 3},
        {"ratio": Fraction(0)},
        {"ratio": Fraction(3, 2)},
        {"quantity": 0},
    ],
)
def test_invalid_canaries_are_refused(kw: dict[str, object]) -> None:
    with pytest.raises(ReleaseError):
        Canary(**kw)  # type: ignore[arg-type]


# --- targeting ----------------------------------------------------------------------------------------


def device(
    i: int, version: str = "1.1.0", *, activated: datetime = NOW - timedelta(days=1), **kw: object
) -> DeviceRecord:
    fields: dict[str, object] = {
        "device_id": f"d{i}",
        "product_id": "p1",
        "region": "EU",
        "activated_at": activated,
        "versions": {0: version},
    }
    fields.update(kw)
    return DeviceRecord(**fields)  # type: ignore[arg-type]


def test_targets_are_the_products_devices_in_the_region_on_a_lower_version() -> None:
    devices = [
        device(1),
        device(2, "1.2"),  # already on the target
        device(3, "1.10.0"),  # higher, numerically
        device(4, product_id="p2"),
        device(5, region="US"),
        device(6, versions={9: "1.0.0"}),  # channel unknown
        device(7, "1.1.99"),
        device(8, "garbage"),  # unreadable: not known to be lower
    ]
    r = at_stage(F)
    assert stage_targets(devices, r, exclude=set()) == ["d1", "d7"]
    assert stage_targets(devices, r, exclude={"d1"}) == ["d7"]


def test_verification_targets_only_the_named_devices() -> None:
    r = started(plan(verification_devices=("d2", "d3")))
    assert stage_targets([device(i) for i in range(5)], r, exclude=set()) == ["d2", "d3"]


def test_canary_excludes_devices_activated_after_it_started_and_is_stable() -> None:
    r = at_stage(C, plan(canary=Canary(ratio=rel.ratio("0.5"))))
    early = [device(i) for i in range(10)]
    late = [device(100 + i, activated=NOW + timedelta(minutes=1)) for i in range(10)]
    picked = stage_targets(early + late, r, exclude=set())
    assert len(picked) == 5
    assert set(picked) <= {d.device_id for d in early}
    assert stage_targets(list(reversed(early + late)), r, exclude=set()) == picked


def test_replanning_a_canary_tops_it_up_never_beyond_its_size() -> None:
    r = at_stage(C, plan(canary=Canary(quantity=4)))
    devices = [device(i) for i in range(10)]
    first = stage_targets(devices, r, exclude=set())
    assert len(first) == 4
    assert stage_targets(devices, r, exclude=set(first), in_stage=4) == []
    assert len(stage_targets(devices, r, exclude=set(first[:2]), in_stage=2)) == 2


@pytest.mark.parametrize(("late_joiners", "expected"), [(True, ["d1", "d2"]), (False, ["d1"])])
def test_full_release_takes_late_joiners_when_configured(late_joiners: bool, expected: list[str]) -> None:
    r = at_stage(F, plan(late_joiners=late_joiners))
    devices = [device(1), device(2, activated=NOW + timedelta(hours=1))]
    assert stage_targets(devices, r, exclude=set()) == expected


def test_one_channel_at_a_time() -> None:
    assert may_command(None, 9)
    assert may_command(9, 9)
    assert not may_command(0, 9)
