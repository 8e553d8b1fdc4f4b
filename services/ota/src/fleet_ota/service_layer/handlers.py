"""ota's handlers: each loads what it needs through its ports, applies a pure transition and stores the
result with its events in one conditional write. A write that loses a race reloads and decides again, so every
handler is safe to run twice or concurrently (at-least-once delivery, several replicas).

Never commanded twice for one attempt: `dispatch_one` stores the attempt (state `commanded`, attempt + 1)
before it calls Tuya. If the process dies (or the database goes away) after that write, the attempt stays
`commanded`; `recover_commanded` later asks Tuya's progress API what became of it, once no command of it can
still reach Tuya: an upgrade under way continues, none gives the attempt back (Tuya never received it: it
costs no attempt and counts as no failure). A retry is a new attempt with its own intent write.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Required, TypedDict, TypeVar, Unpack

from fleet_contracts.device import DeviceOtaProgressed, OtaUpgradeStatus
from fleet_contracts.ota import DeviceUpgradeState, FirmwareRegistered
from fleet_ota.domain import firmware as catalog
from fleet_ota.domain import release as rel
from fleet_ota.domain import schedule
from fleet_ota.domain import sweep as sw
from fleet_ota.domain import upgrade as up
from fleet_ota.domain.firmware import Firmware, FirmwareSpec
from fleet_ota.domain.release import RegionPlan, RegionRollout, ReleaseError, ReleaseTarget, StageCounts
from fleet_ota.domain.targeting import DeviceFact, plan_chunks, stage_targets, versions_below
from fleet_ota.domain.upgrade import Change, DeviceUpgrade, UpgradePolicy
from fleet_ota.ports import (
    ChannelLocks,
    Claim,
    Clock,
    CountedEntry,
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
    # a recorded command is sent within this long of its intent or not at all, and its call is abandoned
    # this long after (outcome unknown): recovery relies on it (`recover_commanded`); bootstrap sets it to a
    # quarter of the recovery's grace period
    command_window_s: float = 30.0
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep


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
    """Plan the current stage; returns how many devices it targets (for a walk: the estimate).

    Verification and late-joiner rounds name their devices in chunks of ids (few devices, read by id or by
    activation time). A canary or a full stage is one walk document (`domain.sweep`): planning reads the
    directory's counts per version, never the devices, so planning 100,000 devices writes one document;
    dispatchers walk the directory lazily. Ids are fixed by the stage and the round: planning again after a
    crash, or in two replicas at once, inserts and counts nothing twice. No upgrade document is written here.
    """
    assert r.stage is not None
    batch = _batch(r, round_)
    await p.progress.open(r.release_id, r.region, r.stage)  # before any delta can reach it
    if r.stage == rel.Stage.VERIFICATION or round_:
        return await _plan_chunks(r, batch, p)
    return await _plan_sweep(r, batch, p)


def _batch(r: RegionRollout, round_: int) -> str:
    assert r.stage is not None
    # batch ids are part of chunk ids: no dots, no dollar
    return f"{r.region}:{r.stage.value}:{round_}".replace(".", "_").replace("$", "_")


def _minute(p: Ports) -> int:
    """A late-joiner round's number: a repeat within the minute (a redelivery, a restart, the other replica)
    names the same chunks."""
    return int(p.clock().timestamp()) // 60


async def _lower_buckets(r: RegionRollout, p: Ports, *, fresh: bool) -> tuple[tuple[str, ...], int]:
    """The directory buckets of the region's devices below the target version, and how many they hold
    (`fresh`: counting every change written so far first; every bucket is listed either way)."""
    t = r.target
    if fresh:
        await p.devices.catch_up()
    counts = await p.devices.counts(t.product_id, r.region, t.channel)
    lower = versions_below(counts, t.version)
    return tuple(sorted(sw.bucket(t.product_id, r.region, t.channel, v) for v in lower)), sum(
        counts[v] for v in lower
    )


async def _plan_chunks(r: RegionRollout, batch: str, p: Ports) -> int:
    if r.stage == rel.Stage.VERIFICATION:
        devices = await p.devices.of_devices(r.plan.verification_devices)
    else:  # a late-joiner round of a full stage: devices activated since it started
        assert r.full_started_at is not None
        buckets, _ = await _lower_buckets(r, p, fresh=False)
        devices = await p.devices.activated_after(buckets, r.full_started_at)
    already = await p.plans.device_ids(r.release_id, r.region, besides=batch)
    already |= set(await p.upgrades.stages_of(r.release_id, [d.device_id for d in devices]))
    chosen = stage_targets(devices, r, exclude=already)
    await p.plans.add(plan_chunks(r, batch, chosen))
    if r.stage == rel.Stage.FULL and chosen:
        await _joined(r, p)
    return len(chosen)


async def _joined(r: RegionRollout, p: Ports) -> None:
    """Late joiners were planned into a full stage: its rollout's version is bumped, so a completion decided
    without them (its check read before they were added) loses its conditional write and decides again; if
    the region finished first, they are cancelled (planned after the end, never dispatched)."""
    for _ in range(_RACE_TRIES):
        cur = await _rollout(r.release_id, r.region, p)
        if cur.status not in (rel.RolloutStatus.RUNNING, rel.RolloutStatus.PAUSED):
            await p.plans.cancel(r.release_id, r.region)
            return
        if await p.rollouts.save(replace(cur, version=cur.version + 1), cur.version, []):
            return
    raise Conflict(f"rollout {r.release_id}/{r.region} kept changing")


async def _plan_sweep(r: RegionRollout, batch: str, p: Ports) -> int:
    buckets, eligible = await _lower_buckets(r, p, fresh=True)
    if r.stage == rel.Stage.CANARY:
        assert r.plan.canary is not None
        planned, cap, cutoff = r.plan.canary.size(eligible), True, r.canary_started_at
    else:
        # the estimate leaves out devices earlier stages hold that have not reached the target; the walk
        # settles the count to the devices it finds
        per_stage = await p.progress.of_release(r.release_id)
        held = sum(
            c.targeted - c.succeeded - c.cancelled
            for (region, stage), c in per_stage.items()
            if region == r.region and stage != r.stage
        )
        planned, cap, cutoff = max(eligible - held, 0), False, r.full_started_at
    assert r.stage is not None
    walk = sw.Sweep(
        r.release_id, r.region, r.stage, batch, buckets, sw.start_of(r.release_id), planned, cap, cutoff
    )
    await p.plans.add_sweep(
        walk, _walk_entries(walk, (("planned", {"targeted": planned, "pending": planned}),))
    )
    stored = await p.plans.get_sweep(walk.sweep_id)  # planned before (a repeat): its estimate stands
    return planned if stored is None else stored.planned


def _walk_entries(s: sw.Sweep, deltas: Iterable[tuple[str, dict[str, int]]]) -> list[CountedEntry]:
    cid = outbox.counter_id(s.release_id, s.region, s.stage)
    return [CountedEntry.counter_only(f"ota:{s.sweep_id}:{what}", cid, d) for what, d in deltas if d]


async def _walk_step(p: Ports, s: sw.Sweep, step: Callable[[sw.Sweep], sw.Step]) -> sw.Sweep:
    """Apply a step to a walk in one conditional write; reload and re-decide on a lost race."""
    current = s
    for _ in range(_RACE_TRIES):
        done = step(current)
        if done.sweep == current:
            return current
        if await p.plans.save_sweep(done.sweep, current.version, _walk_entries(current, done.deltas)):
            return done.sweep
        reloaded = await p.plans.get_sweep(current.sweep_id)
        if reloaded is None:
            raise NotFound(f"walk {current.sweep_id} vanished")
        current = reloaded
    raise Conflict(f"walk {s.sweep_id} kept changing")


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
        # the stage's walk claims nothing more: what it had not reached is the next stage's
        for s in await p.plans.sweeps(r.release_id, r.region):
            if s.stage == r.stage:
                await _walk_step(p, s, sw.end)
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
    return await plan_stage(r, p, round_=_minute(p))


async def pause_rollout(release_id: str, region: str, by: str, reason: str | None, p: Ports) -> RegionRollout:
    async def step(r: RegionRollout) -> rel.Transition:
        return rel.pause(r, by=by, reason=reason)

    return await _save_rollout(p, await _rollout(release_id, region, p), step)


async def resume_rollout(release_id: str, region: str, by: str, p: Ports) -> RegionRollout:
    async def step(r: RegionRollout) -> rel.Transition:
        # a halted region is judged from now on over what settles after this resume
        counts = await region_counts(r, p) if r.status == rel.RolloutStatus.HALTED else None
        return rel.resume(r, by=by, region=counts)

    return await _save_rollout(p, await _rollout(release_id, region, p), step)


async def stop_rollout(release_id: str, region: str, p: Ports) -> RegionRollout:
    """Stop the region: no new commands; devices not yet in flight are cancelled (in-flight ones finish)."""

    async def step(r: RegionRollout) -> rel.Transition:
        return rel.finish(r, await region_counts(r, p), stopped=True)

    stopped = await _save_rollout(p, await _rollout(release_id, region, p), step)
    # planned ids first: a dispatcher filling a claim after this sees the cancel and cancels what it created
    await p.plans.cancel(release_id, region)
    for s in await p.plans.sweeps(release_id, region):
        await _walk_step(p, s, sw.stop)
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
        case rel.Complete() if not await _has_open(release_id, region, p) and not await _left_behind(r, p):
            # the counters said nothing is open; the chunks and documents agree (a count may be relayed late),
            # and no device of the stage was left out of it

            async def complete(cur: RegionRollout) -> rel.Transition:
                if cur.version != r.version and (
                    await _has_open(release_id, region, p) or await _left_behind(cur, p)
                ):
                    return rel.Transition(cur)  # late joiners were planned meanwhile
                return rel.finish(cur, await region_counts(cur, p), stopped=False)

            return await _save_rollout(p, r, complete)
    return r


async def _has_open(release_id: str, region: str, p: Ports) -> bool:
    return await p.plans.has_open(release_id, region) or await p.upgrades.has_open(release_id, region)


# directory entries a completion check reads at once
_REST_PAGE = 500
# how long a late joiner whose versions are not fetched yet holds its full stage at most
_FETCH_WAIT = timedelta(minutes=10)


async def _left_behind(r: RegionRollout, p: Ports) -> bool:
    """Before a full stage completes: devices of its buckets that are in no stage of the release are planned
    now (a round of the stage, like late joiners'), and the stage waits for them. Its walk ended without
    them: they entered the directory behind it (versions fetched late, an event's device first heard of
    then), or were activated after it started and no late-joiner round came since (one a minute). A
    late joiner whose versions are still to be fetched holds the stage too. Reads the entries still below
    the target: succeeded devices have left those buckets, so mostly the failed ones."""
    if r.stage != rel.Stage.FULL or r.full_started_at is None:
        return False
    t = r.target
    # a fetch failing for good holds the stage no longer than this after the device's activation
    since = max(r.full_started_at, p.clock() - _FETCH_WAIT)
    if r.plan.late_joiners and await p.devices.refreshing(t.product_id, r.region, since):
        return True
    buckets, _ = await _lower_buckets(r, p, fresh=False)
    found: list[sw.DirectoryEntry] = []
    after, more = "", True
    while more:
        page, more = await p.devices.page(buckets, after, None, _REST_PAGE)
        if not page:
            break
        after = page[-1].position
        in_release = await p.upgrades.stages_of(r.release_id, [e.device_id for e in page])
        found += [e for e in page if e.device_id not in in_release]
    if not r.plan.late_joiners:
        found = [e for e in found if e.activated_at <= r.full_started_at]
    if not found:
        return False
    planned = await p.plans.device_ids(r.release_id, r.region, besides="")
    missing = sorted({e.device_id for e in found} - planned - set(r.plan.verification_devices))
    if not missing:
        return False
    # the late-joiner round of this minute (ids another round of the minute left out wait for the next)
    await p.plans.add(plan_chunks(r, _batch(r, _minute(p)), missing))
    await _joined(r, p)
    return True


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
    intent = await _intend(u, p)
    if intent is None:
        return u  # not this caller's to send now
    return await _send(intent, p)


async def _intend(u: DeviceUpgrade, p: Ports) -> DeviceUpgrade | None:
    """The device's channel lock and the attempt's intent (`commanded`, attempt + 1), written before Tuya is
    called. None: another channel of the device is upgrading (its turn comes later), or someone else
    recorded this attempt (and sends it)."""
    if not await p.locks.acquire(u.device_id, u.channel, u.upgrade_id):
        return None
    now = p.clock()
    change = up.command(u, p.policy, now)
    if change.upgrade.state != DeviceUpgradeState.COMMANDED or change.upgrade == u:
        return None
    # one conditional write, never re-decided on a reload: a lost race means another dispatcher recorded
    # this attempt (it sends it) or news changed the upgrade (a later round looks again)
    entries = outbox.for_upgrade(change, tenant=p.tenant, now=now)
    if not await p.upgrades.save(change.upgrade, u.version, entries):
        return None
    return change.upgrade


async def _send(intent: DeviceUpgrade, p: Ports) -> DeviceUpgrade:
    """Command the recorded attempt: within `command_window_s` of its intent or never (given back), and the
    call abandoned after as long again (its outcome unknown: recovery asks Tuya later). So nothing of it
    reaches Tuya later than twice the window after the intent, which `recover_commanded` relies on. Raises
    `RateLimited` (the attempt given back) on Tuya's rate limit."""
    if _age_s(intent, p) > p.command_window_s:
        # too late (a stalled process, a slow database): sending now could race recovery's give-back
        return await _answer(intent, p, lambda cur: up.give_back(cur, intent, p.clock(), "not sent in time"))
    try:
        async with asyncio.timeout(p.command_window_s):
            await p.tuya.confirm_upgrade(intent.device_id, intent.channel)
    except UpgradeRefused as e:
        if e.rate_limited:
            await _answer(intent, p, lambda cur: up.give_back(cur, intent, p.clock()))
            raise RateLimited(str(e)) from e
        reason = str(e)
        return await _answer(intent, p, lambda cur: _refused(cur, intent, reason, p))
    except Exception:  # unknown outcome (timeout, connection lost): never re-sent, reconciled later
        log.warning("upgrade command for %s has an unknown outcome; it will be reconciled", intent.upgrade_id)
    return intent


def _age_s(intent: DeviceUpgrade, p: Ports) -> float:
    return 0.0 if intent.commanded_at is None else (p.clock() - intent.commanded_at).total_seconds()


async def _answer(
    intent: DeviceUpgrade, p: Ports, transition: Callable[[DeviceUpgrade], Change]
) -> DeviceUpgrade:
    """Record Tuya's answer to a command. A database outage is waited out while the answer is still this
    process's to record (until twice the command window after the intent: recovery waits longer, then finds
    the same at Tuya); a refusal not recorded would be given back by recovery and sent again."""
    wait = 0.25
    while True:
        try:
            return await apply_transition(p, intent, transition)
        except (Conflict, NotFound):
            raise
        except Exception:  # the store failed (an outage; its driver's errors are the adapter's): retried
            if _age_s(intent, p) + wait > 2 * p.command_window_s:
                raise
            log.warning("recording Tuya's answer for %s failed; trying again", intent.upgrade_id)
            await p.sleep(wait)
            wait = min(2 * wait, 2.0)


async def _withdraw(intent: DeviceUpgrade, p: Ports) -> None:
    """The attempt was recorded but not sent (no slot, the service stopping): given back. Not retried: if the
    database is away, recovery gives it back later."""
    await apply_transition(p, intent, lambda cur: up.give_back(cur, intent, p.clock(), "command not sent"))


def _refused(u: DeviceUpgrade, intent: DeviceUpgrade, reason: str, p: Ports) -> Change:
    if not up.same_intent(u, intent):
        return Change(u)  # news about this attempt arrived meanwhile: it wins
    return up.fail_attempt(u, reason, p.policy, p.clock())


async def ready_upgrades(r: RegionRollout, limit: int, p: Ports) -> list[DeviceUpgrade]:
    """Up to `limit` upgrades of the region ready to be commanded: pending or due for a retry, then planned
    devices given their upgrade documents now."""
    ready = await p.upgrades.ready_to_command(r.release_id, r.region, p.clock(), limit)
    while len(ready) < limit:
        # a claim takes a few ahead (or repairs a crash's leftovers): beyond the limit, they wait as pending;
        # a walk's claim ends where its phase ends, so a round may need two
        created = await create_planned(r, limit - len(ready), p)
        if not created:
            break
        ready += created
    return ready[:limit]


async def dispatch(release_id: str, region: str, limit: int, p: Ports) -> int:
    """Command up to `limit` ready upgrades of a running region at once; returns how many were commanded."""
    r = await _rollout(release_id, region, p)
    if not r.dispatching or not r.plan.schedule.allows(p.clock()):
        return 0
    ready = await ready_upgrades(r, limit, p)
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


class RoundOptions(TypedDict, total=False):
    """`prepare_round`'s keyword arguments (`draw`, `most` and `ahead_s` required)."""

    draw: Required[Callable[[], float]]
    most: Required[int]
    ahead_s: Required[float]
    throttle: schedule.Throttle | None
    lead: schedule.Lead | None
    project: ProjectPace | None
    idle_s: float


async def paced_dispatch(r: RegionRollout, p: Ports, **options: Unpack[RoundOptions]) -> int:
    """Command what the region's rate allows from now to `ahead_s` ahead, each command at its own slot, so
    Tuya never sees a burst: a round prepared (`prepare_round`), then sent (`send_round`). Returns how many
    were fired. The service's loop does not wait for a round's slots: it prepares the next one while the last
    is sent (`send_later`)."""
    prepared = await prepare_round(r, p, **options)
    return 0 if prepared is None else await send_round(prepared, p)


@dataclass
class Prepared:
    """A dispatch round ready to send: its recorded intents and their slots (seconds since the epoch), with
    what was reserved for them (given back for what is not sent)."""

    rollout: RegionRollout
    intents: list[DeviceUpgrade]
    slots: list[float]
    region: tuple[float, list[float]]  # the region's reservation (start, gaps)
    project: ProjectPace | None
    project_slots: tuple[float, list[float]]  # the project's reservation (start, gaps), when paced
    throttle: schedule.Throttle | None


async def prepare_round(
    r: RegionRollout,
    p: Ports,
    *,
    draw: Callable[[], float],
    most: int,
    ahead_s: float,
    throttle: schedule.Throttle | None = None,
    lead: schedule.Lead | None = None,
    project: ProjectPace | None = None,
    idle_s: float = 0.0,
) -> Prepared | None:
    """Record the intents of what the region's rate allows from now to `ahead_s` ahead (more while preparing
    takes longer: `lead`; plus `idle_s`, the time until the caller's next round looks: a round sent in the
    background is followed by the next one's slots without a gap) and reserve their slots.

    The region's schedule (shared by every replica: one conditional write reserves a round's slots, so
    replicas together keep to the region's rate) says how many; with `project`, the project's schedule on
    Tuya's upgrade API (shared by every region, release and replica) says when, so all of them together stay
    under Tuya's limit, which is the project's (`ProjectPace`). The round's intents are written first (at
    once, their round trips overlapping), then its slots reserved, so the first slot is not already past.
    None: nothing to send (no slot free, nothing ready, not this replica's turn)."""
    # `r` is the rollout as the caller just read it (the loop's list of running regions)
    if not r.dispatching or not r.plan.schedule.allows(p.clock()):
        return None
    if project:
        throttle = project.throttle
    slower = throttle.factor if throttle and not project else 1.0
    rate = r.plan.dispatch
    ahead_s = (lead.ahead(ahead_s) if lead else ahead_s) + idle_s
    # how many slots the window holds (reserved below, once the intents are written); both schedules read
    # at once (each round trip counts on a loaded database)
    began = p.clock().timestamp()
    reads = [p.pacing.next_at(r.release_id, r.region)]
    if project:
        reads.append(p.pacing.next_at(_PROJECT, p.tenant))
    at, *project_at = await asyncio.gather(*reads)
    _, window = schedule.due(at, began, rate, draw, most=most, ahead_s=ahead_s, slower=slower)
    # with the project paced: no more than its schedule has free in the window (promised to this round)
    promised = project.promise(project_at[0], began, len(window), ahead_s) if project else len(window)
    if not promised:
        return None
    try:
        ready = await ready_upgrades(r, promised, p)
        if project:  # what this round cannot use goes to the replica's other rounds at once
            project.settled(promised - len(ready))
            promised = len(ready)
        intents = await _each(ready, lambda u: _intend(u, p))
        mine = [i for i in intents if i is not None]
        if lead:
            lead.observed(p.clock().timestamp() - began)
        # both reservations at once: the region's says how many, the project's when
        reserving = [_reserve_region(r, p, at, len(mine), draw, ahead_s, slower)]
        if project:
            reserving.append(project.reserve(p, len(mine), ahead_s, at=project_at[0]))
        (start, gaps), *project_slots = await asyncio.gather(*reserving)
    finally:
        if project:
            project.settled(promised)
    slots = [start + sum(gaps[:k]) for k in range(len(gaps))]
    held = project_slots[0] if project else (0.0, [])
    if project:
        project_start, project_gaps = held
        slots = [project_start + sum(project_gaps[:k]) for k in range(min(len(gaps), len(project_gaps)))]
    return Prepared(r, mine, slots, (start, gaps), project, held, throttle)


async def send_round(rd: Prepared, p: Ports) -> int:
    """Fire each intent at its slot without waiting for the previous answer (`in_flight`), so neither the
    database's nor Tuya's latency slows the pace. Slots and intents not used (Tuya's rate limit, the service
    stopping, this replica's lease on the project's pace ended) are given back. Returns how many were fired.
    """
    project, slots = rd.project, rd.slots
    project_gaps = rd.project_slots[1]
    fired = used = 0
    state = _Round(rd.throttle, stop_after=2 if project else 1)
    last = float("-inf")
    try:
        for k, at_s in enumerate(slots):
            if project:
                # never closer than a gap to this round's previous command (after a stall of the process, no
                # burst: Tuya may allow none), and at most `_LATE_S` past the round's last slot (the slots
                # after it are another round's; a late command may meet one of them and be refused, but a
                # slow database, its reservation answered after its slots, must not keep a round from sending
                # anything): what no longer fits is given back
                gap = project_gaps[k]
                # looked at again after each wait: the replica's next round may have fired meanwhile (its
                # first slot is this round's last one's, which may leave up to a gap late)
                while (due := max(at_s, last + gap, project.fired_at + gap)) > p.clock().timestamp() + 1e-6:
                    await _wait_until(due, p)
                now = p.clock().timestamp()
                if now > slots[-1] + max(gap, _LATE_S) or not project.holds(now):
                    break
                project.fired_at = now
            else:
                await _wait_until(at_s, p)
            if state.limited:
                break  # Tuya's limit answered: the rest wait for a later round
            _fire(rd.intents[fired], p, state)
            last = p.clock().timestamp()
            fired, used = fired + 1, k + 1
    finally:
        # intents not sent (no slot, Tuya's limit, the service stopping) give their attempt back
        await asyncio.shield(asyncio.gather(*(_withdraw(left, p) for left in rd.intents[fired:])))
    r, (_, gaps) = rd.rollout, rd.region
    if fired < len(gaps):
        await p.pacing.give_back(r.release_id, r.region, sum(gaps[fired:]))
    if project:
        await project.give_back(p, rd.project_slots[0], project_gaps, used)
        if used < len(project_gaps):
            project.cut += 1  # the loop prepares the next round now, not when these slots would have ended
    return fired


# rounds sent in the background (kept referenced until done; `in_flight` awaits them)
_SENDING: set[asyncio.Task[int]] = set()


def send_later(rd: Prepared, p: Ports) -> None:
    """Send a prepared round in the background: the caller prepares the next one meanwhile (a round that
    waited for its last slot before the next one prepared left a gap of a round's preparation each time)."""

    async def send() -> int:
        try:
            return await send_round(rd, p)
        except Exception as e:  # its intents are given back by recovery
            log.warning("dispatch round of %s/%s failed: %r", rd.rollout.release_id, rd.rollout.region, e)
            return 0

    task = asyncio.create_task(send())
    _SENDING.add(task)
    task.add_done_callback(_SENDING.discard)


async def _reserve_region(
    r: RegionRollout,
    p: Ports,
    at: float | None,
    n: int,
    draw: Callable[[], float],
    ahead_s: float,
    slower: float,
) -> tuple[float, list[float]]:
    """The slots of up to `n` commands on the region's schedule (`(start, gaps)`), reserved with one
    conditional write (`at`: the schedule as last read)."""
    for attempt in range(_RACE_TRIES if n else 0):
        now = p.clock().timestamp()
        if attempt:
            at = await p.pacing.next_at(r.release_id, r.region)  # another replica reserved meanwhile
        start, gaps = schedule.due(at, now, r.plan.dispatch, draw, most=n, ahead_s=ahead_s, slower=slower)
        if not gaps:
            break
        if await p.pacing.move(r.release_id, r.region, at, start + sum(gaps)):
            return start, gaps
    return 0.0, []


# how late past its last slot a round still sends (with the project paced)
_LATE_S = 1.0

# the project's schedule is kept beside the regions' (`DispatchPacing`) under an empty release id, which
# no release has
_PROJECT = ""


@dataclass
class ProjectPace:
    """One replica's part in pacing the project's commands on Tuya's upgrade API. Tuya's limit there is the
    project's, not a region's: every region and release of every replica takes its commands' slots from one
    schedule (when the project's next command is due), `per_s` times `share` a second, moved on by one
    conditional write per round (replicas and regions racing for it read again and take the slots after).
    `share` leaves a margin: a command leaving a few milliseconds late, then the next one on time, still
    arrive a full gap of Tuya's limit apart (it may allow no burst). Regions of this replica preparing a
    round at once are promised slots first (`promise`), so their intents add up to what the schedule has
    free in the window and none is written only to be withdrawn. `throttle` slows the pace while Tuya still
    refuses (another client of the project, a limit set too high).

    With `lease_s`, one replica at a time sends the project's commands: it holds a lease on the project's
    pace (a document beside the schedule, renewed while half its term is left) and the others stand by,
    taking it over once it has expired (a replica killed or stalled: within `lease_s`). Replicas taking
    turns at the schedule lost time to each other: a command of one sent a few milliseconds late and the
    next of the other on time were refused (the margin is 3% of a gap), and a round that lost the race for
    the slots withdrew its intents. The lease decides only who sends: the slots still come from the
    schedule, so a new holder continues after the old one's last reserved slot, and a holder sends nothing
    once its term ended by its own clock (replicas whose clocks disagree may overlap by the difference: some
    1199s, given back as always)."""

    per_s: float
    share: float = 0.97
    # refusals slow the pace only when they repeat within 20 accepted commands (isolated: jitter in transit)
    throttle: schedule.Throttle = field(default_factory=lambda: schedule.Throttle(tolerated=20))
    promised: int = 0
    # when this replica's last command left: its next one keeps a gap from it, whichever round sends it (a
    # command sent late, then the next round's on time, was refused: ~25% of them at low load)
    fired_at: float = float("-inf")
    lease_s: float = 0.0  # 0: no lease, every replica races for the slots
    holder: str = field(default_factory=lambda: uuid.uuid4().hex)
    held_until: float = float("-inf")  # by this replica's clock: when its lease ends
    cut: int = 0  # rounds of this replica that ended before their last slot (Tuya's limit, late, no lease)

    def __post_init__(self) -> None:
        if not self.per_s > 0 or not 0 < self.share <= 1 or self.lease_s < 0:
            raise ValueError("the project's pace needs a limit above 0, a share in (0, 1] and a lease >= 0")

    def holds(self, now: float) -> bool:
        """Whether this replica may send the project's commands at `now` (no lease: always)."""
        return not self.lease_s or now < self.held_until

    async def take_turn(self, p: Ports) -> bool:
        """Whether this replica dispatches the project's commands now: its lease renewed when half of it is
        gone, or taken over once the holder's has expired (one conditional write). False: stand by."""
        if not self.lease_s:
            return True
        now = p.clock().timestamp()
        if self.held_until - now > self.lease_s / 2:
            return True
        # the term counts from before the write: the holder stops no later than the others think it does
        until = now + self.lease_s
        if await p.pacing.hold(_PROJECT, p.tenant, self.holder, now=now, until=until):
            self.held_until = until
            return True
        self.held_until = float("-inf")
        return False

    def _rate(self) -> schedule.DispatchRate:
        return schedule.DispatchRate(per_minute=60.0 * self.per_s * self.share)

    def _due(self, at: float | None, now: float, most: int, ahead_s: float) -> tuple[float, list[float]]:
        return schedule.due(
            at, now, self._rate(), lambda: 0.5, most=most, ahead_s=ahead_s, slower=self.throttle.factor
        )

    def promise(self, at: float | None, now: float, want: int, ahead_s: float) -> int:
        """How many of `want` commands a round may prepare: the free slots in the window of the schedule as
        read (`at`), less those promised to this replica's other rounds preparing now (no await: rounds
        of the replica never count the same slot twice). Hand them back with `settled`."""
        free = len(self._due(at, now, want + self.promised, ahead_s)[1])
        mine = max(min(want, free - self.promised), 0)
        self.promised += mine
        return mine

    def settled(self, promised: int) -> None:
        self.promised -= promised

    async def reserve(
        self, p: Ports, n: int, ahead_s: float, *, at: float | None = None
    ) -> tuple[float, list[float]]:
        """The slots of up to `n` commands in the window (`(start, gaps)`), reserved with one conditional
        write (`at`: the schedule as last read, else read now)."""
        for attempt in range(_RACE_TRIES if n else 0):
            if attempt or at is None:
                at = await p.pacing.next_at(_PROJECT, p.tenant)
            start, gaps = self._due(at, p.clock().timestamp(), n, ahead_s)
            if not gaps:
                break
            if await p.pacing.move(_PROJECT, p.tenant, at, start + sum(gaps)):
                return start, gaps
        return 0.0, []

    async def give_back(self, p: Ports, start: float, gaps: list[float], used: int) -> None:
        """The reserved slots not used go back only while no one reserved after them: moving the schedule
        back under another round's slots would put two commands in one gap."""
        if used < len(gaps):
            end = start + sum(gaps)
            await p.pacing.move(_PROJECT, p.tenant, end, start + sum(gaps[:used]))


@dataclass
class _Round:
    throttle: schedule.Throttle | None
    # refusals (1199) that end the round: with the project paced, a single one is jitter in transit (a
    # command a few ms late, the next on time: the margin is 3% of a gap) and ending the round for it lost
    # the rest of its slots (the next round had reserved after them: they could not go back)
    stop_after: int = 1
    refusals: int = 0

    @property
    def limited(self) -> bool:
        return self.refusals >= self.stop_after


# commands fired and not answered yet (kept referenced until done; `in_flight` awaits them)
_FIRED: set[asyncio.Task[None]] = set()


def _fire(intent: DeviceUpgrade, p: Ports, state: _Round) -> None:
    async def send() -> None:
        try:
            await _send(intent, p)
        except RateLimited:
            state.refusals += 1
            if state.throttle:
                state.throttle.refused()
            return
        except Exception as e:  # its answer could not be recorded: recovery takes the attempt over
            log.warning("upgrade command for %s: %r", intent.upgrade_id, e)
            return
        if state.throttle:
            state.throttle.accepted()

    task = asyncio.create_task(send())
    _FIRED.add(task)
    task.add_done_callback(_FIRED.discard)


async def in_flight() -> None:
    """Wait for every round sent in the background to end and every command fired so far to be answered (a
    graceful stop, a benchmark's end)."""
    while _SENDING or _FIRED:
        await asyncio.gather(*list(_SENDING), *list(_FIRED), return_exceptions=True)


async def _wait_until(at: float, p: Ports) -> None:
    wait = at - p.clock().timestamp()
    if wait > 0:
        await p.sleep(wait)


async def create_planned(r: RegionRollout, limit: int, p: Ports) -> list[DeviceUpgrade]:
    """The next planned devices (at least `CLAIM_AHEAD`) get their upgrade documents (pending), claimed first
    so that two dispatchers never take the same ids: named chunks first, then the stage's walk. Documents are
    unique per release and device, so ids a crash left claimed without one are created by a later round
    (after `claim_grace_s`) and never twice. Returns the upgrades this call created (the round dispatches up
    to its limit of them)."""
    now = p.clock()
    repair_before = now - timedelta(seconds=p.claim_grace_s)
    # a few ahead: the next rounds find them pending (one claim every few rounds, not one per round)
    ahead = max(limit, CLAIM_AHEAD)
    claim = await p.plans.claim(r.release_id, r.region, ahead, now=now, repair_before=repair_before)
    if claim is None:
        claim = await _claim_walk(r, ahead, p, now, repair_before)
    if claim is None:
        return []
    t = r.target
    created = await p.upgrades.create(
        [
            DeviceUpgrade(r.release_id, r.region, claim.stage, d, t.product_id, t.channel, t.version)
            for d in claim.device_ids
        ]
    )
    stopped = await (_fill_walk(claim, created, p) if claim.sweep else p.plans.fill(claim))
    if stopped:  # stopped meanwhile: what was created is cancelled like the rest
        for u in created:
            await apply_transition(p, u, lambda cur: up.cancel(cur, "release stopped"))
        return []
    return created


# pages a claim may read before giving up for this round (a walk through devices it all skips)
_WALK_PAGES = 20


async def _claim_walk(
    r: RegionRollout, limit: int, p: Ports, now: datetime, repair_before: datetime
) -> Claim | None:
    walks = await p.plans.sweeps(r.release_id, r.region)
    for s in walks:
        if (old := sw.stale(s, repair_before)) is not None:
            # its dispatcher died before confirming: created again (duplicates ignored), then confirmed
            return Claim(
                s.sweep_id,
                r.release_id,
                r.region,
                s.stage,
                old.device_ids,
                s.claimed,
                True,
                s.sweep_id,
                old.key,
            )
    for s in walks:
        current = s
        for _ in range(_WALK_PAGES):
            if current.ended:
                break
            after, before = current.window()
            page, more = await p.devices.page(current.buckets, after, before, max(2 * limit, 50))
            in_release = await p.upgrades.stages_of(r.release_id, [e.device_id for e in page])
            exclude = set(r.plan.verification_devices) | set(in_release)
            step = sw.take(current, page, more, exclude, limit, now)
            if step.sweep == current:
                break
            if not await p.plans.save_sweep(step.sweep, current.version, _walk_entries(current, step.deltas)):
                reloaded = await p.plans.get_sweep(current.sweep_id)  # another dispatcher walked on
                if reloaded is None:
                    break
                current = reloaded
                continue
            current = step.sweep
            if step.taken:
                key = current.claims[-1].key
                return Claim(
                    s.sweep_id,
                    r.release_id,
                    r.region,
                    s.stage,
                    step.taken,
                    current.claimed,
                    False,
                    s.sweep_id,
                    key,
                )
    return None


async def _fill_walk(claim: Claim, created: Sequence[DeviceUpgrade], p: Ports) -> bool:
    """Confirm a walk's claim; ids whose upgrade another stage has are taken off this stage's count. Returns
    whether the walk was stopped meanwhile."""
    assert claim.sweep is not None
    made = {u.device_id for u in created}
    existed = [d for d in claim.device_ids if d not in made]
    stages = await p.upgrades.stages_of(claim.release_id, existed) if existed else {}
    other = sum(1 for d in existed if stages.get(d, claim.stage) != claim.stage)
    s = await p.plans.get_sweep(claim.sweep)
    if s is None:
        return False
    after = await _walk_step(p, s, lambda cur: sw.fill(cur, claim.key, other))
    return after.cancelled is not None


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
        versions = await p.tuya.current_versions(u.device_id)
        reported = versions.get(u.channel)
        if reported is not None:
            await on_device_version(u.device_id, u.channel, reported, p)
            await _record_versions(u.device_id, versions, p)

    await _each(done, verify)
    return len(done)


async def _record_versions(device_id: str, versions: dict[int, str], p: Ports) -> None:
    """What the device reported goes into the directory too (the next release's targets and counts)."""
    known = await p.devices.of_devices([device_id])
    if known and any(known[0].versions.get(ch) != v for ch, v in versions.items()):
        await p.devices.record(replace(known[0], versions={**known[0].versions, **versions}))


# --- the device directory, fed by device events and the OpenAPI -------------------------------------------


async def on_device_seen(
    device_id: str,
    product_id: str | None,
    region: str,
    at: datetime,
    p: Ports,
    *,
    activated: bool,
    changed: bool,
) -> None:
    """A device event (in order per device; a repeat changes nothing twice): a device not known yet is noted
    and its versions fetched; an activation sets its activation time; `changed` (an upgrade that ended, either
    way) has its versions fetched again. Events without the product say too little to be noted."""
    if product_id is None:
        return
    await p.devices.learn(device_id, product_id, region, at, activated=activated, changed=changed)


async def refresh_directory(limit: int, p: Ports) -> int:
    """Fetch the versions of devices the events marked (`GET /v2.0/cloud/thing/{id}/firmware`) into the
    directory; returns how many."""
    facts = await p.devices.to_refresh(limit)

    async def refresh(fact: DeviceFact) -> None:
        await p.devices.refreshed(fact, await p.tuya.current_versions(fact.device_id))

    await _each(facts, refresh)
    return len(facts)


async def expire_deadlines(limit: int, p: Ports) -> int:
    now = p.clock()
    due = await p.upgrades.deadline_passed(now, limit)
    await _each(due, lambda u: apply_transition(p, u, lambda cur: up.on_tick(cur, p.policy, now)))
    return len(due)


async def recover_commanded(grace_s: float, limit: int, p: Ports) -> int:
    """Commanded attempts with no news for `grace_s` (a crash, a database outage, a lost answer): ask Tuya,
    never re-send; an attempt Tuya never received is given back (`upgrade.reconcile_commanded`).

    The grace period must outlast every way the command can still reach Tuya, and Tuya's lag in showing it:
    otherwise "nothing under way" could be a command on its way, and giving it back would send it twice. A
    command is sent within `command_window_s` of its intent or never, and its call is abandoned as long after
    (`_send`): nothing of it reaches Tuya later than twice the window after the intent. Tuya answers the
    command once it has created the upgrade, and its progress API shows it from then on (the simulator does
    both at once); the rest of the grace (half of it: bootstrap sets the window to a quarter, so 60 s with
    the default 120 s) covers Tuya's lag (a request it reads late, after the call was abandoned; replication
    behind its progress API) and the clock skew between the replica that recorded the intent and this one.
    """
    stale = await p.upgrades.commanded_before(p.clock() - timedelta(seconds=grace_s), limit)

    async def recover(u: DeviceUpgrade) -> None:
        status, progress = await p.tuya.progress(u.device_id, u.channel)
        reported = ended_at = None
        if status in up.FINAL_FAILURES and u.previous_commanded_at is not None:
            # the progress API keeps the last upgrade's final status: the attempt before's, or this one's?
            ended_at = await p.tuya.upgrade_ended_at(u.device_id, u.channel)
        if status in (OtaUpgradeStatus.NO_UPDATE, OtaUpgradeStatus.READY) or up.previous_outcome(u, ended_at):
            # an upgrade Tuya finished may show as nothing under way: what does the device run?
            reported = (await p.tuya.current_versions(u.device_id)).get(u.channel)

        def reconcile(cur: DeviceUpgrade) -> Change:
            if not up.same_intent(cur, u):
                return Change(cur)  # news arrived meanwhile, or it was given back and recorded again
            return up.reconcile_commanded(
                cur, status, progress, p.policy, p.clock(), reported=reported, ended_at=ended_at
            )

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
