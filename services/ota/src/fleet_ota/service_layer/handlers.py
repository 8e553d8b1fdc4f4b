"""ota's handlers: each loads what it needs through its ports, applies a pure transition and stores the
result with its events in one conditional write. A write that loses a race reloads and decides again, so every
handler is safe to run twice or concurrently (at-least-once delivery, several replicas).

Never commanded twice for one attempt: `dispatch_one` stores the attempt (state `commanded`, attempt + 1)
before it calls Tuya. If the process dies after that write, the attempt stays `commanded`; `recover_commanded`
later asks Tuya's progress API what became of it, then continues or fails the attempt; it never calls the
command again. A retry is a new attempt with its own intent write.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TypeVar

from fleet_contracts.device import DeviceOtaProgressed, OtaUpgradeStatus
from fleet_contracts.ota import DeviceUpgradeState, FirmwareRegistered
from fleet_ota.domain import firmware as catalog
from fleet_ota.domain import release as rel
from fleet_ota.domain import schedule
from fleet_ota.domain import upgrade as up
from fleet_ota.domain.firmware import Firmware, FirmwareSpec
from fleet_ota.domain.release import RegionPlan, RegionRollout, ReleaseError, ReleaseTarget, StageCounts
from fleet_ota.domain.targeting import plan_chunks, stage_targets
from fleet_ota.domain.upgrade import Change, DeviceUpgrade, UpgradePolicy
from fleet_ota.ports import (
    ChannelLocks,
    Clock,
    DeviceDirectory,
    DispatchPacing,
    FirmwareRepository,
    PlanRepository,
    ProgressRepository,
    RolloutRepository,
    TuyaOta,
    UpgradeRefused,
    UpgradeRepository,
)
from fleet_ota.service_layer import outbox

log = logging.getLogger(__name__)

_RACE_TRIES = 8  # conditional writes that lost to another writer are reloaded and decided again
_T = TypeVar("_T")
_R = TypeVar("_R")
# devices handled at once by one round (each device is its own document: their writes never conflict)
CONCURRENCY = 16
# planned devices given their (pending) upgrade documents per claim, at least
CLAIM_AHEAD = 20


async def _each(items: Iterable[_T], action: Callable[[_T], Awaitable[_R]]) -> list[_R]:
    """`action` over every item, `CONCURRENCY` at a time (database and Tuya round trips overlap)."""
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(item: _T) -> _R:
        async with gate:
            return await action(item)

    return list(await asyncio.gather(*(one(i) for i in items)))


class Conflict(RuntimeError):
    """A document kept changing under us; the caller's delivery is retried later."""


class NotFound(LookupError):
    pass


class RateLimited(RuntimeError):
    """Tuya's rate limit turned a command away (its attempt was given back): stop this dispatch round."""


@dataclass(frozen=True, slots=True)
class Ports:
    firmware: FirmwareRepository
    rollouts: RolloutRepository
    upgrades: UpgradeRepository
    plans: PlanRepository
    progress: ProgressRepository
    devices: DeviceDirectory
    locks: ChannelLocks
    pacing: DispatchPacing
    tuya: TuyaOta
    clock: Clock
    tenant: str
    policy: UpgradePolicy = field(default_factory=UpgradePolicy)
    # planned ids claimed this long ago without an upgrade document were left by a crash: created again
    claim_grace_s: float = 30.0


# --- catalog --------------------------------------------------------------------------------------------


async def register_firmware(spec: FirmwareSpec, by: str, p: Ports) -> Firmware:
    """Register (idempotent for the same content; refused with `CatalogError` for other content)."""
    now = p.clock()
    catalog.validate(spec)
    existing = await p.firmware.get(catalog.firmware_id(spec.product_id, spec.channel, spec.version))
    result = catalog.register(spec, existing, by=by, now=now)
    if not result.new:
        return result.firmware
    fw = result.firmware
    event = FirmwareRegistered(
        firmware_id=fw.firmware_id,
        product_id=spec.product_id,
        channel=spec.channel,
        version=spec.version,
        size_bytes=spec.size_bytes,
        md5=spec.md5,
        signature=spec.signature,
        upgrade_type=spec.upgrade_type,
        registered_by=by,
    )
    entry = outbox.for_firmware(event, tenant=p.tenant, region="*", now=now)
    if not await p.firmware.add(fw, [entry]):
        # a concurrent registration won: same content is fine, other content is refused
        return catalog.register(spec, await p.firmware.get(fw.firmware_id), by=by, now=now).firmware
    return fw


async def withdraw_firmware(firmware_id: str, p: Ports) -> Firmware:
    fw = await p.firmware.get(firmware_id)
    if fw is None:
        raise NotFound(f"firmware {firmware_id} is not in the catalog")
    active = await p.rollouts.active_of_firmware(firmware_id)
    withdrawn = catalog.withdraw(fw, active_releases=active, now=p.clock())
    if withdrawn is not fw:
        await p.firmware.mark_withdrawn(withdrawn)
    return withdrawn


# --- releases -------------------------------------------------------------------------------------------


async def create_release(release_id: str, firmware_id: str, plans: Sequence[RegionPlan], p: Ports) -> None:
    """One scheduled rollout per region; starting them is `start_rollout` (when their schedule allows)."""
    fw = await p.firmware.get(firmware_id)
    if fw is None or fw.withdrawn:
        raise NotFound(f"firmware {firmware_id} is not in the catalog")
    regions = [pl.region for pl in plans]
    if not plans or len(set(regions)) != len(regions):
        raise ReleaseError("a release needs at least one region, each once")
    s = fw.spec
    target = ReleaseTarget(fw.firmware_id, s.product_id, s.channel, s.version)
    await p.rollouts.add([RegionRollout(release_id, target, pl) for pl in plans])


async def plan_stage(r: RegionRollout, p: Ports, *, round_: int = 0) -> int:
    """Plan the current stage's targets as chunks of device ids (counted by the chunks' own outbox entries).

    A round is chosen again from scratch (only other rounds' devices are excluded), and its chunk ids are
    fixed by the stage, the round and the sorted ids: planning again after a crash, or in two replicas at
    once, makes the same chunks, so nothing is inserted or counted twice. No upgrade document is written
    here: each device gets its own when it is dispatched (`dispatch`), so planning 100,000 devices is a few
    hundred inserts.
    (Known limit: if the directory changed between a crash mid-planning and the repeat, the repeat's chunks
    can differ from those already inserted; a device can then be left out, or planned twice and counted once
    too many.)
    """
    assert r.stage is not None
    # batch ids are part of chunk ids: no dots, no dollar
    batch = f"{r.region}:{r.stage.value}:{round_}".replace(".", "_").replace("$", "_")
    devices = await p.devices.candidates(r.target.product_id, r.region, r.target.channel, r.target.version)
    already = await p.plans.device_ids(r.release_id, r.region, besides=batch)
    in_stage = await p.plans.count_in_stage(r.release_id, r.region, r.stage, besides=batch)
    chosen = stage_targets(devices, r, exclude=already, in_stage=in_stage)
    await p.progress.open(r.release_id, r.region, r.stage)  # before any delta can reach it
    await p.plans.add(plan_chunks(r, batch, chosen))
    return len(chosen)


async def _save_rollout(
    p: Ports, loaded: RegionRollout, step: Callable[[RegionRollout], Awaitable[rel.Transition]]
) -> RegionRollout:
    current = loaded
    for _ in range(_RACE_TRIES):
        t = await step(current)
        if not t.events:
            return t.rollout
        entries = outbox.for_rollout(t.rollout, t.events, tenant=p.tenant, now=p.clock())
        if await p.rollouts.save(t.rollout, current.version, entries):
            return t.rollout
        reloaded = await p.rollouts.get(current.release_id, current.region)
        if reloaded is None:
            raise NotFound(f"rollout {current.release_id}/{current.region} vanished")
        current = reloaded
    raise Conflict(f"rollout {loaded.release_id}/{loaded.region} kept changing")


async def _rollout(release_id: str, region: str, p: Ports) -> RegionRollout:
    r = await p.rollouts.get(release_id, region)
    if r is None:
        raise NotFound(f"release {release_id} has no region {region}")
    return r


async def start_rollout(release_id: str, region: str, by: str, p: Ports) -> RegionRollout:
    async def step(r: RegionRollout) -> rel.Transition:
        if r.status != rel.RolloutStatus.SCHEDULED:
            return rel.Transition(r)
        begun = rel.start(r, targets=0, by=by, now=p.clock())
        targets = await plan_stage(begun.rollout, p)
        return rel.start(r, targets=targets, by=by, now=begun.rollout.stage_started_at or p.clock())

    return await _save_rollout(p, await _rollout(release_id, region, p), step)


async def promote_rollout(
    release_id: str, region: str, by: str | None, p: Ports, *, decision: rel.Promote | None = None
) -> RegionRollout:
    now = p.clock()

    async def step(r: RegionRollout) -> rel.Transition:
        moved = rel.promote(r, targets=0, now=now, by=by, decision=decision)
        targets = await plan_stage(moved.rollout, p)
        return rel.promote(r, targets=targets, now=now, by=by, decision=decision)

    return await _save_rollout(p, await _rollout(release_id, region, p), step)


async def plan_late_joiners(release_id: str, region: str, p: Ports) -> int:
    """A running full stage that takes late joiners adds devices activated since (call it periodically).

    The round is the current minute: a repeat within the minute (a redelivery, a restart) adds nothing twice,
    and a batch a crash left uncounted is counted by the next planning (`plan_stage`).
    """
    r = await _rollout(release_id, region, p)
    if r.status != rel.RolloutStatus.RUNNING or r.stage != rel.Stage.FULL or not r.plan.late_joiners:
        return 0
    return await plan_stage(r, p, round_=int(p.clock().timestamp()) // 60)


async def pause_rollout(release_id: str, region: str, by: str, reason: str | None, p: Ports) -> RegionRollout:
    async def step(r: RegionRollout) -> rel.Transition:
        return rel.pause(r, by=by, reason=reason)

    return await _save_rollout(p, await _rollout(release_id, region, p), step)


async def resume_rollout(release_id: str, region: str, by: str, p: Ports) -> RegionRollout:
    async def step(r: RegionRollout) -> rel.Transition:
        return rel.resume(r, by=by)

    return await _save_rollout(p, await _rollout(release_id, region, p), step)


async def stop_rollout(release_id: str, region: str, p: Ports) -> RegionRollout:
    """Stop the region: no new commands; devices not yet in flight are cancelled (in-flight ones finish)."""

    async def step(r: RegionRollout) -> rel.Transition:
        return rel.finish(r, await region_counts(r, p), stopped=True)

    stopped = await _save_rollout(p, await _rollout(release_id, region, p), step)
    # planned ids first: a dispatcher filling a claim after this sees the cancel and cancels what it created
    await p.plans.cancel(release_id, region)
    while batch := await p.upgrades.cancellable(release_id, region, 500):
        after = [await apply_transition(p, u, lambda u: up.cancel(u, "release stopped")) for u in batch]
        if all(a == b for a, b in zip(after, batch, strict=True)):
            break  # nothing could be cancelled (all raced into flight): do not spin
    return stopped


async def for_each_region(
    release_id: str, p: Ports, action: Callable[[str], Awaitable[RegionRollout]]
) -> list[RegionRollout]:
    """A whole-release command: the same action per region (each its own state machine)."""
    return [await action(r.region) for r in await p.rollouts.of_release(release_id)]


async def region_counts(r: RegionRollout, p: Ports) -> StageCounts:
    return _region_total(r, await p.progress.of_release(r.release_id))


def _region_total(r: RegionRollout, per_stage: dict[tuple[str, rel.Stage], StageCounts]) -> StageCounts:
    return sum((c for (region, _), c in per_stage.items() if region == r.region), StageCounts())


async def evaluate_rollout(release_id: str, region: str, p: Ports) -> RegionRollout:
    """Apply what the counters call for: halt (judged over the region's stages together), promote (planning
    the next stage), complete."""
    r = await _rollout(release_id, region, p)
    if r.stage is None:
        return r
    per_stage = await p.progress.of_release(release_id)  # one read: the stage's and the region's counters
    stage = per_stage.get((region, r.stage), StageCounts())
    decision = rel.decide(r, stage, _region_total(r, per_stage))
    match decision:
        case rel.Halt():
            halted = decision

            async def halt(cur: RegionRollout) -> rel.Transition:
                return rel.halt(cur, halted)

            return await _save_rollout(p, r, halt)
        case rel.Promote():
            return await promote_rollout(release_id, region, None, p, decision=decision)
        case rel.Complete() if not await _has_open(release_id, region, p):
            # the counters said nothing is open; the chunks and documents agree (a count may be relayed late)

            async def complete(cur: RegionRollout) -> rel.Transition:
                return rel.finish(cur, await region_counts(cur, p), stopped=False)

            return await _save_rollout(p, r, complete)
    return r


async def _has_open(release_id: str, region: str, p: Ports) -> bool:
    return await p.plans.has_open(release_id, region) or await p.upgrades.has_open(release_id, region)


# --- device upgrades ------------------------------------------------------------------------------------


async def apply_transition(
    p: Ports, u: DeviceUpgrade, transition: Callable[[DeviceUpgrade], Change]
) -> DeviceUpgrade:
    """Apply a transition with its events in one conditional write; reload and re-decide on a lost race."""
    current = u
    for _ in range(_RACE_TRIES):
        change = transition(current)
        if change.upgrade == current:
            return current
        if await p.upgrades.save(
            change.upgrade, current.version, outbox.for_upgrade(change, tenant=p.tenant, now=p.clock())
        ):
            if change.upgrade.terminal:
                await p.locks.release(change.upgrade.device_id, change.upgrade.upgrade_id)
            return change.upgrade
        reloaded = await p.upgrades.get(current.upgrade_id)
        if reloaded is None:
            raise NotFound(f"upgrade {current.upgrade_id} vanished")
        current = reloaded
    raise Conflict(f"upgrade {u.upgrade_id} kept changing")


async def dispatch_one(u: DeviceUpgrade, p: Ports) -> DeviceUpgrade:
    """Record the attempt, then command it. A refusal fails the attempt; an unknown outcome awaits recovery"""
    if not await p.locks.acquire(u.device_id, u.channel, u.upgrade_id):
        return u  # another channel of this device is upgrading: its turn comes later
    now = p.clock()
    intent = await apply_transition(p, u, lambda cur: up.command(cur, p.policy, now))
    if intent.state != DeviceUpgradeState.COMMANDED or intent.attempt == u.attempt:
        return intent  # someone else recorded (and sends) this attempt
    try:
        await p.tuya.confirm_upgrade(intent.device_id, intent.channel)
    except UpgradeRefused as e:
        if e.rate_limited:
            await apply_transition(p, intent, lambda cur: up.withdraw_command(cur, intent.attempt, p.clock()))
            raise RateLimited(str(e)) from e
        reason = str(e)
        return await apply_transition(p, intent, lambda cur: _refused(cur, intent.attempt, reason, p))
    except Exception:  # unknown outcome (timeout, connection lost): never re-sent, reconciled later
        log.warning("upgrade command for %s has an unknown outcome; it will be reconciled", intent.upgrade_id)
    return intent


def _refused(u: DeviceUpgrade, attempt: int, reason: str, p: Ports) -> Change:
    if u.attempt != attempt or u.state != DeviceUpgradeState.COMMANDED:
        return Change(u)  # news about this attempt arrived meanwhile: it wins
    return up.fail_attempt(u, reason, p.policy, p.clock())


async def dispatch(release_id: str, region: str, limit: int, p: Ports) -> int:
    """Command up to `limit` ready upgrades of a running region; returns how many were commanded."""
    r = await _rollout(release_id, region, p)
    if not r.dispatching or not r.plan.schedule.allows(p.clock()):
        return 0
    ready = await p.upgrades.ready_to_command(release_id, region, p.clock(), limit)
    if len(ready) < limit:
        # a claim takes a few ahead (or repairs a crash's leftovers): beyond the limit, they wait as pending
        ready = (ready + await create_planned(r, limit - len(ready), p))[:limit]
    limited = False

    async def one(u: DeviceUpgrade) -> int:
        nonlocal limited
        if limited:
            return 0  # the rest wait for the next round; none of them used an attempt
        try:
            after = await dispatch_one(u, p)
        except RateLimited:
            limited = True
            return 0
        return int(after.attempt > u.attempt)

    return sum(await _each(ready, one))


async def paced_dispatch(
    r: RegionRollout, p: Ports, *, draw: Callable[[], float], backlog_s: float, most: int
) -> int:
    """Dispatch what the region's rate allows now, on its schedule shared by every replica: one conditional
    write reserves the round's commands, so two replicas together keep to the region's rate. Reserved commands
    that were not sent (nothing ready, Tuya's rate limit, outside the window) are given back."""
    now = p.clock().timestamp()
    for _ in range(_RACE_TRIES):
        at = await p.pacing.next_at(r.release_id, r.region)
        start, gaps = schedule.due(at, now, r.plan.dispatch, draw, backlog_s=backlog_s, most=most)
        if not gaps:
            return 0
        if await p.pacing.move(r.release_id, r.region, at, start + sum(gaps)):
            break
    else:
        return 0  # other replicas kept taking this round's commands
    sent = await dispatch(r.release_id, r.region, len(gaps), p)
    if sent < len(gaps):
        await p.pacing.give_back(r.release_id, r.region, sum(gaps[sent:]))
    return sent


async def create_planned(r: RegionRollout, limit: int, p: Ports) -> list[DeviceUpgrade]:
    """The next planned devices (at least `CLAIM_AHEAD`) get their upgrade documents (pending), claimed first
    so that two dispatchers never take the same ids. Documents are unique per release and device, so ids a
    crash left claimed without one are created by a later round (after `claim_grace_s`) and never twice.
    Returns the upgrades this call created (the round dispatches up to its limit of them)."""
    now = p.clock()
    repair_before = now - timedelta(seconds=p.claim_grace_s)
    # a few ahead: the next rounds find them pending (one claim every few rounds, not one per round)
    ahead = max(limit, CLAIM_AHEAD)
    claim = await p.plans.claim(r.release_id, r.region, ahead, now=now, repair_before=repair_before)
    if claim is None:
        return []
    t = r.target
    created = await p.upgrades.create(
        [
            DeviceUpgrade(r.release_id, r.region, claim.stage, d, t.product_id, t.channel, t.version)
            for d in claim.device_ids
        ]
    )
    if await p.plans.fill(claim):  # stopped meanwhile: what was created is cancelled like the rest
        for u in created:
            await apply_transition(p, u, lambda cur: up.cancel(cur, "release stopped"))
        return []
    return created


async def _each_open(
    device_id: str, channel: int | None, p: Ports, transition: Callable[[DeviceUpgrade], Change]
) -> list[DeviceUpgrade]:
    return [
        await apply_transition(p, u, transition)
        for u in await p.upgrades.open_of_device(device_id)
        if channel is None or u.channel == channel
    ]


async def on_device_progress(
    device_id: str, channel: int, status: OtaUpgradeStatus, progress: int | None, p: Ports
) -> list[DeviceUpgrade]:
    now = p.clock()
    return await _each_open(
        device_id, channel, p, lambda u: up.on_progress(u, status, progress, p.policy, now)
    )


async def on_device_error(device_id: str, channel: int, code: int, p: Ports) -> list[DeviceUpgrade]:
    now = p.clock()
    return await _each_open(device_id, channel, p, lambda u: up.on_error_code(u, code, p.policy, now))


async def on_device_version(device_id: str, channel: int, version: str, p: Ports) -> list[DeviceUpgrade]:
    now = p.clock()
    return await _each_open(device_id, channel, p, lambda u: up.on_version(u, version, p.policy, now))


async def on_device_presence(device_id: str, online: bool, p: Ports) -> list[DeviceUpgrade]:
    now = p.clock()
    return await _each_open(device_id, None, p, lambda u: up.on_presence(u, online, now))


async def on_ota_progress(event: DeviceOtaProgressed, p: Ports) -> list[DeviceUpgrade]:
    """A `device.ota.progressed` event: Tuya's view of the upgrade.

    The push's `version` is not taken as the device's own report: `deviceOtaProgress`'s layout is undocumented
    and the field may name the target. Success waits for the firmware API (`verify_done`).
    """
    return await on_device_progress(
        event.device_id, event.channel, event.upgrade_status, event.progress_percent, p
    )


async def verify_done(limit: int, p: Ports) -> int:
    """Ask Tuya which version devices it called done now run: success needs the device's own report."""
    done = await p.upgrades.done_unverified(limit)

    async def verify(u: DeviceUpgrade) -> None:
        reported = (await p.tuya.current_versions(u.device_id)).get(u.channel)
        if reported is not None:
            await on_device_version(u.device_id, u.channel, reported, p)

    await _each(done, verify)
    return len(done)


async def expire_deadlines(limit: int, p: Ports) -> int:
    now = p.clock()
    due = await p.upgrades.deadline_passed(now, limit)
    await _each(due, lambda u: apply_transition(p, u, lambda cur: up.on_tick(cur, p.policy, now)))
    return len(due)


async def recover_commanded(grace_s: float, limit: int, p: Ports) -> int:
    """Commanded attempts with no news for `grace_s` (a crash, a lost answer): ask Tuya, never re-send."""
    now = p.clock()
    stale = await p.upgrades.commanded_before(now - timedelta(seconds=grace_s), limit)

    async def recover(u: DeviceUpgrade) -> None:
        status, progress = await p.tuya.progress(u.device_id, u.channel)

        def reconcile(cur: DeviceUpgrade) -> Change:
            return up.reconcile_commanded(cur, status, progress, p.policy, now)

        await apply_transition(p, u, reconcile)

    await _each(stale, recover)
    return len(stale)


async def poll_upgrading(after_s: float, limit: int, p: Ports) -> int:
    """Upgrades under way for `after_s` with no "done" yet: ask Tuya's progress API (a lost or late push must
    not leave a device upgrading until its timeout)."""
    stale = await p.upgrades.upgrading_before(p.clock() - timedelta(seconds=after_s), limit)

    async def poll(u: DeviceUpgrade) -> None:
        status, progress = await p.tuya.progress(u.device_id, u.channel)
        await on_device_progress(u.device_id, u.channel, status, progress, p)

    await _each(stale, poll)
    return len(stale)


def with_clock(p: Ports, now: datetime) -> Ports:
    """The same ports at a fixed time (tests and replays)."""
    return replace(p, clock=lambda: now)
