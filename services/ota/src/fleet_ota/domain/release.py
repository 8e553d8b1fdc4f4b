"""A release of one firmware: one rollout per data-center region, each its own state machine.

Rules:
- Tuya isolates devices per data center, so every region is released, promoted, halted, paused and stopped on
  its own; what happens in one region never changes another. Whole-release commands apply to each region.
- Stages: verification on a named device list -> canary (by ratio of the region's eligible devices, rounded
  up, or by quantity, capped by the eligible count) -> full. A stage without devices configured is skipped.
- Promotion is automatic when the stage's success rate reaches the threshold over at least the minimum sample
  of settled devices (succeeded + failed), or manual when no threshold is set. Verification promotes only once
  every verification device has settled ("when the test devices successfully verify").
- Halt is automatic when the failure rate reaches its threshold over at least the minimum sample, in that
  region only; a halted region dispatches nothing until an operator resumes or stops it. Failures are judged
  over the region's stages together: a region failing 30% can pass a canary of 30 by chance (5 failures are
  under 20%) and then fail a full stage whose own settled devices are still below the minimum sample.
- A minimum sample of 0 still needs one settled device: a rate over nothing decides nothing.
- An operator's resume of a halted region takes a baseline of the region's counts: from then on the halt
  threshold and its minimum sample are judged over the devices settled since the resume (the failures that
  halted it do not halt it again at once).
- The full stage completes when none of its devices is pending, in flight or waiting.
- Status: scheduled -> running <-> paused; running/paused -> halted -> running (resume) ; any open -> stopped;
  running -> completed. Stopped and completed are final.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from fractions import Fraction
from typing import Any

from fleet_contracts.ota import (
    ReleaseFact,
    ReleaseFinished,
    ReleaseHalted,
    ReleaseOutcome,
    ReleasePaused,
    ReleasePromoted,
    ReleaseResumed,
    ReleaseStage,
    ReleaseStarted,
)
from fleet_ota.domain.schedule import DispatchRate, Schedule

Stage = ReleaseStage


class RolloutStatus(StrEnum):
    SCHEDULED = "scheduled"
    RUNNING = "running"
    PAUSED = "paused"
    HALTED = "halted"
    STOPPED = "stopped"
    COMPLETED = "completed"


OPEN = frozenset({RolloutStatus.SCHEDULED, RolloutStatus.RUNNING, RolloutStatus.PAUSED, RolloutStatus.HALTED})


class ReleaseError(ValueError):
    """A release command breaks a rule; nothing was changed."""


@dataclass(frozen=True, slots=True)
class Canary:
    """Exactly one of ratio (0 < r <= 1, of the region's eligible devices) or quantity (>= 1)."""

    ratio: Fraction | None = None
    quantity: int | None = None

    def __post_init__(self) -> None:
        if (self.ratio is None) == (self.quantity is None):
            raise ReleaseError("a canary is by ratio or by quantity, not both or neither")
        if self.ratio is not None and not 0 < self.ratio <= 1:
            raise ReleaseError("canary ratio must be above 0 and at most 1")
        if self.quantity is not None and self.quantity < 1:
            raise ReleaseError("canary quantity must be at least 1")

    def size(self, eligible: int) -> int:
        """Devices in the canary: a ratio rounds up (a nonzero share of a nonempty region is >= 1 device)."""
        if self.ratio is not None:
            return min(math.ceil(self.ratio * eligible), eligible)
        assert self.quantity is not None
        return min(self.quantity, eligible)


def ratio(text: str) -> Fraction:
    """`"0.1"` -> 1/10 exactly (a float would make 10% of 30 devices 4)."""
    return Fraction(text)


@dataclass(frozen=True, slots=True)
class Threshold:
    rate: float  # 0..1
    min_sample: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.rate <= 1 or self.min_sample < 0:
            raise ReleaseError("a threshold is a rate between 0 and 1 and a sample size of at least 0")

    def reached(self, hits: int, sample: int) -> bool:
        if sample < max(self.min_sample, 1):
            return False
        return hits >= self.rate * sample


@dataclass(frozen=True, slots=True)
class RegionPlan:
    region: str
    verification_devices: tuple[str, ...] = ()
    canary: Canary | None = None
    promote_at: Threshold | None = None  # None: manual promotion
    halt_at: Threshold | None = None  # None: no automatic halt
    late_joiners: bool = True  # the full stage takes devices activated after it started
    schedule: Schedule = field(default_factory=Schedule)
    dispatch: DispatchRate = field(default_factory=DispatchRate)

    def first_stage(self) -> Stage:
        return self.next_stage(None)

    def next_stage(self, stage: Stage | None) -> Stage:
        order = [Stage.VERIFICATION, Stage.CANARY, Stage.FULL]
        start = 0 if stage is None else order.index(stage) + 1
        for s in order[start:]:
            if s == Stage.VERIFICATION and not self.verification_devices:
                continue
            if s == Stage.CANARY and self.canary is None:
                continue
            return s
        raise ReleaseError("the full stage is the last one")


@dataclass(frozen=True, slots=True)
class ReleaseTarget:
    firmware_id: str
    product_id: str
    channel: int
    version: str


_BUCKET_FIELDS = ("pending", "upgrading", "waiting", "succeeded", "failed", "cancelled")


@dataclass(frozen=True, slots=True)
class StageCounts:
    """One stage's progress counters (see `upgrade.BUCKETS`)."""

    targeted: int = 0
    pending: int = 0
    upgrading: int = 0
    waiting: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0

    @property
    def settled(self) -> int:
        return self.succeeded + self.failed

    def __add__(self, other: StageCounts) -> StageCounts:
        return StageCounts(*(getattr(self, f) + getattr(other, f) for f in ("targeted", *_BUCKET_FIELDS)))

    @property
    def open(self) -> int:
        return self.pending + self.upgrading + self.waiting

    @property
    def success_rate(self) -> float | None:
        return self.succeeded / self.settled if self.settled else None

    @property
    def failure_rate(self) -> float | None:
        return self.failed / self.settled if self.settled else None


@dataclass(frozen=True, slots=True)
class RegionRollout:
    release_id: str
    target: ReleaseTarget
    plan: RegionPlan
    status: RolloutStatus = RolloutStatus.SCHEDULED
    stage: Stage | None = None
    stage_started_at: datetime | None = None
    canary_started_at: datetime | None = None
    full_started_at: datetime | None = None
    version: int = 0
    # the region's (failed, settled) counts when an operator last resumed it from a halt
    halt_baseline: tuple[int, int] = (0, 0)

    @property
    def region(self) -> str:
        return self.plan.region

    @property
    def dispatching(self) -> bool:
        return self.status == RolloutStatus.RUNNING


@dataclass(frozen=True, slots=True)
class Transition:
    rollout: RegionRollout
    events: tuple[ReleaseFact, ...] = ()


@dataclass(frozen=True, slots=True)
class Hold:
    pass


@dataclass(frozen=True, slots=True)
class Halt:
    failure_rate: float
    sample: int


@dataclass(frozen=True, slots=True)
class Promote:
    to_stage: Stage
    success_rate: float
    sample: int


@dataclass(frozen=True, slots=True)
class Complete:
    pass


Decision = Hold | Halt | Promote | Complete


def decide(r: RegionRollout, counts: StageCounts, region: StageCounts | None = None) -> Decision:
    """What the counters call for (the caller applies it): `counts` are the current stage's (promotion,
    completion), `region` all the region's stages together (halting; the current stage's when omitted)."""
    if r.status not in (RolloutStatus.RUNNING, RolloutStatus.PAUSED) or r.stage is None:
        return Hold()
    plan = r.plan
    judged = counts if region is None else region
    failed, settled = judged.failed - r.halt_baseline[0], judged.settled - r.halt_baseline[1]
    if plan.halt_at is not None and plan.halt_at.reached(failed, settled):
        return Halt(failed / settled, settled)
    if r.status != RolloutStatus.RUNNING:
        return Hold()
    if r.stage == Stage.FULL:
        return Complete() if counts.open == 0 else Hold()
    if plan.promote_at is None:
        return Hold()
    if r.stage == Stage.VERIFICATION and counts.open:
        return Hold()
    if plan.promote_at.reached(counts.succeeded, counts.settled):
        return Promote(plan.next_stage(r.stage), counts.success_rate or 0.0, counts.settled)
    return Hold()


def _bump(r: RegionRollout, **fields: Any) -> RegionRollout:
    return replace(r, version=r.version + 1, **fields)


def _stage_fields(stage: Stage, now: datetime) -> dict[str, Any]:
    fields: dict[str, Any] = {"stage": stage, "stage_started_at": now}
    if stage == Stage.CANARY:
        fields["canary_started_at"] = now
    if stage == Stage.FULL:
        fields["full_started_at"] = now
    return fields


def start(r: RegionRollout, *, targets: int, by: str, now: datetime) -> Transition:
    """Begin the first stage; `targets` is what planning found for it."""
    if r.status != RolloutStatus.SCHEDULED:
        return Transition(r)
    stage = r.plan.first_stage()
    new = _bump(r, status=RolloutStatus.RUNNING, **_stage_fields(stage, now))
    t = r.target
    return Transition(
        new,
        (
            ReleaseStarted(
                release_id=r.release_id,
                tuya_region=r.region,
                firmware_id=t.firmware_id,
                product_id=t.product_id,
                channel=t.channel,
                version=t.version,
                stage=stage,
                target_devices=targets,
                started_by=by,
            ),
        ),
    )


def promote(
    r: RegionRollout,
    *,
    targets: int,
    now: datetime,
    by: str | None = None,
    decision: Promote | None = None,
) -> Transition:
    """Move to the next stage, automatically (`decision`) or by an operator (`by`)."""
    if r.status != RolloutStatus.RUNNING or r.stage is None or r.stage == Stage.FULL:
        raise ReleaseError(f"region {r.region} cannot be promoted while {r.status} in stage {r.stage}")
    to = r.plan.next_stage(r.stage)
    event = ReleasePromoted(
        release_id=r.release_id,
        tuya_region=r.region,
        from_stage=r.stage,
        to_stage=to,
        automatic=decision is not None,
        promoted_by=by,
        success_rate=decision.success_rate if decision else None,
        sample_size=decision.sample if decision else None,
        target_devices=targets,
    )
    return Transition(_bump(r, **_stage_fields(to, now)), (event,))


def halt(r: RegionRollout, decision: Halt) -> Transition:
    if r.status not in (RolloutStatus.RUNNING, RolloutStatus.PAUSED) or r.stage is None:
        return Transition(r)
    event = ReleaseHalted(
        release_id=r.release_id,
        tuya_region=r.region,
        stage=r.stage,
        automatic=True,
        reason=f"failure rate {decision.failure_rate:.1%} over {decision.sample} devices reached its limit",
        failure_rate=decision.failure_rate,
        sample_size=decision.sample,
    )
    return Transition(_bump(r, status=RolloutStatus.HALTED), (event,))


def pause(r: RegionRollout, *, by: str, reason: str | None = None) -> Transition:
    if r.status == RolloutStatus.PAUSED:
        return Transition(r)
    if r.status not in (RolloutStatus.SCHEDULED, RolloutStatus.RUNNING):
        raise ReleaseError(f"region {r.region} is {r.status}: only a scheduled or running region pauses")
    event = ReleasePaused(release_id=r.release_id, tuya_region=r.region, paused_by=by, reason=reason)
    return Transition(_bump(r, status=RolloutStatus.PAUSED), (event,))


def resume(r: RegionRollout, *, by: str, region: StageCounts | None = None) -> Transition:
    """Resume a paused or halted region (a halt is lifted by an operator only). Resuming from a halt takes
    `region` (the region's counts now) as the baseline the halt threshold is judged from."""
    if r.status == RolloutStatus.RUNNING:
        return Transition(r)
    if r.status not in (RolloutStatus.PAUSED, RolloutStatus.HALTED):
        raise ReleaseError(f"region {r.region} is {r.status}: only a paused or halted region resumes")
    status = RolloutStatus.SCHEDULED if r.stage is None else RolloutStatus.RUNNING
    event = ReleaseResumed(release_id=r.release_id, tuya_region=r.region, resumed_by=by)
    fields: dict[str, Any] = {"status": status}
    if r.status == RolloutStatus.HALTED and region is not None:
        fields["halt_baseline"] = (region.failed, region.settled)
    return Transition(_bump(r, **fields), (event,))


def finish(r: RegionRollout, counts: StageCounts, *, stopped: bool) -> Transition:
    """Complete (the full stage settled) or stop (an operator) the region; `counts` covers all its stages."""
    if r.status not in OPEN:
        return Transition(r)
    status = RolloutStatus.STOPPED if stopped else RolloutStatus.COMPLETED
    event = ReleaseFinished(
        release_id=r.release_id,
        tuya_region=r.region,
        outcome=ReleaseOutcome.STOPPED if stopped else ReleaseOutcome.COMPLETED,
        succeeded=counts.succeeded,
        failed=counts.failed,
        not_attempted=counts.pending + counts.cancelled,
    )
    return Transition(_bump(r, status=status), (event,))
