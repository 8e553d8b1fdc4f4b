"""ota's handlers with fakes at the port seam: planning, dispatch with the recorded intent, crash recovery,
one channel at a time, region isolation, stop, and counters that equal a recount."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any

import orjson
import pytest

from fleet_contracts.device import DeviceOtaProgressed, TuyaOrigin
from fleet_contracts.device import OtaUpgradeStatus as T
from fleet_contracts.ota import DeviceUpgradeState as S
from fleet_contracts.ota import ReleaseStage, UpgradeType
from fleet_ota.domain import upgrade as up
from fleet_ota.domain.firmware import CatalogError, FirmwareSpec
from fleet_ota.domain.release import Canary, RegionPlan, ReleaseError, RolloutStatus, Threshold, ratio
from fleet_ota.domain.schedule import DispatchRate, Lead, Throttle
from fleet_ota.domain.targeting import DeviceRecord
from fleet_ota.domain.upgrade import UpgradePolicy
from fleet_ota.service_layer import handlers as h
from fleet_ota.service_layer.handlers import Ports
from tests.unit.ota.fakes import NOW, FakePacing, FakeTuya, FakeUpgrades, World

pytestmark = pytest.mark.unit

POLICY = UpgradePolicy(max_attempts=2, backoff_s=60, backoff_max_s=60, attempt_timeout_s=600)
C, F = ReleaseStage.CANARY, ReleaseStage.FULL


def ota_push(**fields: Any) -> DeviceOtaProgressed:
    """A 1002 `deviceOtaProgress` as ingest publishes it."""
    origin = TuyaOrigin(protocol=1002, biz_code="deviceOtaProgress", push_time_ms=1_764_417_600_000)
    return DeviceOtaProgressed(origin=origin, **fields)


def spec(channel: int = 0, version: str = "1.2.0") -> FirmwareSpec:
    return FirmwareSpec(
        "p1", channel, version, 1024, "a" * 32, "sig", "https://x/fw.bin", UpgradeType.SILENT, 60
    )


async def fleet(w: World, regions: dict[str, int]) -> None:
    for region, n in regions.items():
        for i in range(n):
            d = f"{region}-{i:03d}"
            await w.devices.record(
                DeviceRecord(d, "p1", region, NOW - timedelta(days=1), {0: "1.1.0", 9: "3.0"})
            )


async def released(w: World, p: Ports, plans: list[RegionPlan], channel: int = 0, rid: str = "r1") -> str:
    fw = await h.register_firmware(spec(channel, "1.2.0" if channel == 0 else "3.1"), "ops", p)
    await h.create_release(rid, fw.firmware_id, plans, p)
    for plan in plans:
        await h.start_rollout(rid, plan.region, "ops", p)
    return fw.firmware_id


async def test_registering_firmware_is_idempotent_and_immutable() -> None:
    w = World()
    p = w.ports()
    first = await h.register_firmware(spec(), "ops", p)
    assert await h.register_firmware(spec(), "someone", p) == first
    assert len(w.firmware.outbox) == 1  # one event
    with pytest.raises(CatalogError):
        await h.register_firmware(
            FirmwareSpec("p1", 0, "1.2", 9, "b" * 32, "s", "https://y", UpgradeType.FORCED, 60), "ops", p
        )


async def test_withdraw_is_refused_until_every_region_is_stopped() -> None:
    w = World()
    p = w.ports(POLICY)
    await fleet(w, {"EU": 3, "US": 3})
    fid = await released(w, p, [RegionPlan("EU"), RegionPlan("US")])
    with pytest.raises(CatalogError):
        await h.withdraw_firmware(fid, p)
    await h.stop_rollout("r1", "EU", p)
    with pytest.raises(CatalogError):
        await h.withdraw_firmware(fid, p)
    await h.stop_rollout("r1", "US", p)
    assert (await h.withdraw_firmware(fid, p)).withdrawn


async def test_planning_targets_the_region_and_counts_each_batch_once() -> None:
    w = World()
    p = w.ports(POLICY)
    await fleet(w, {"EU": 10, "US": 4})
    await released(w, p, [RegionPlan("EU", canary=Canary(quantity=3)), RegionPlan("US")])
    eu, us = await w.progress.counts("r1", "EU", C), await w.progress.counts("r1", "US", F)
    assert (eu.targeted, eu.pending, us.targeted) == (3, 3, 4)
    r = await w.rollouts.get("r1", "EU")
    assert r is not None
    assert await h.plan_stage(r, p) == 3  # planning again (after a crash) adds nothing
    assert (await w.progress.counts("r1", "EU", C)).targeted == 3


async def test_dispatch_records_the_intent_and_never_commands_an_attempt_twice() -> None:
    w = World()
    p = w.ports(POLICY)
    await fleet(w, {"EU": 5})
    await released(w, p, [RegionPlan("EU")])
    w.tuya.lose_answer = {"EU-001"}  # the call happened, the answer was lost: outcome unknown
    assert await h.dispatch("r1", "EU", 10, p) == 5
    assert await h.dispatch("r1", "EU", 10, p) == 0
    lost = await w.upgrades.get("r1:EU-001")
    assert lost is not None
    assert (lost.state, lost.attempt) == (S.COMMANDED, 1)
    # recovery asks Tuya; the upgrade is under way there, so it continues without a second command
    w.tuya.status["EU-001"] = T.UPGRADING
    w.clock.now = NOW + timedelta(minutes=5)
    assert await h.recover_commanded(120, 100, p) == 5
    assert len(w.tuya.commands) == 5
    assert len(set(w.tuya.commands)) == 5


async def _intent(w: World, p: Ports, device_count: int = 1) -> list[up.DeviceUpgrade]:
    """Recorded intents whose commands were never sent (the process died, or the database went away,
    between recording them and calling Tuya)."""
    await fleet(w, {"EU": device_count})
    await released(w, p, [RegionPlan("EU")])
    r = await w.rollouts.get("r1", "EU")
    assert r is not None
    return [
        await h.apply_transition(p, u, lambda cur: up.command(cur, POLICY, w.clock()))
        for u in await h.create_planned(r, 10, p)
    ]


async def test_an_intent_tuya_never_received_is_given_back_and_sent_once_under_the_same_attempt() -> None:
    """Not a failure: no attempt used, nothing counted failed (the halting counters), and the counters
    still equal a recount."""
    w = World()
    p = w.ports(POLICY)
    [intent] = await _intent(w, p)
    assert intent.state == S.COMMANDED
    w.clock.now = NOW + timedelta(minutes=3)
    assert await h.recover_commanded(120, 10, p) == 1  # Tuya knows of no upgrade: it never received it
    after = await w.upgrades.get(intent.upgrade_id)
    assert after is not None
    assert (after.state, after.attempt, after.reason, w.tuya.commands) == (S.PENDING, 0, up.NOT_RECEIVED, [])
    counts = await w.progress.counts("r1", "EU", F)
    assert (counts.failed, counts.pending) == (0, 1)
    assert counts == w.progress.recount("r1", "EU", F)
    assert await h.dispatch("r1", "EU", 10, p) == 1  # the same attempt number, sent once
    sent = await w.upgrades.get(intent.upgrade_id)
    assert sent is not None
    assert (sent.state, sent.attempt, w.tuya.commands) == (S.COMMANDED, 1, [("EU-000", 0)])
    w.tuya.status["EU-000"] = T.UPGRADING
    w.clock.now = NOW + timedelta(minutes=6)
    await h.recover_commanded(120, 10, p)
    assert len(w.tuya.commands) == 1
    assert await w.progress.counts("r1", "EU", F) == w.progress.recount("r1", "EU", F)


@pytest.mark.parametrize(
    ("tuya", "versions", "state"),
    [
        (T.UPGRADING, {}, S.UPGRADING),  # sent, Tuya under way
        (T.WAITING_FOR_WAKE_UP, {}, S.WAITING),
        (T.DONE, {}, S.UPGRADING),  # sent, Tuya done: the version check is left
        (T.NO_UPDATE, {0: "1.2.0"}, S.SUCCEEDED),  # sent, done, and Tuya shows nothing under way any more
    ],
)
async def test_an_intent_tuya_received_is_never_sent_again(
    tuya: T, versions: dict[int, str], state: S
) -> None:
    w = World()
    p = w.ports(POLICY)
    await fleet(w, {"EU": 1})
    await released(w, p, [RegionPlan("EU")])
    w.tuya.lose_answer = {"EU-000"}  # the call reached Tuya; its answer was lost
    assert await h.dispatch("r1", "EU", 10, p) == 1
    w.tuya.status["EU-000"], w.tuya.versions["EU-000"] = tuya, versions
    w.clock.now = NOW + timedelta(minutes=3)
    assert await h.recover_commanded(120, 10, p) == 1
    after = await w.upgrades.get("r1:EU-000")
    assert after is not None
    assert (after.state, after.attempt) == (state, 1)
    w.clock.now = NOW + timedelta(hours=2)
    await h.dispatch("r1", "EU", 10, p)
    assert w.tuya.commands == [("EU-000", 0)]


async def test_recovery_waits_out_the_grace_period_to_the_millisecond() -> None:
    """Before the grace period has passed, a command may still be on its way into Tuya: not touched."""
    w = World()
    p = w.ports(POLICY)
    [intent] = await _intent(w, p)
    w.clock.now = NOW + timedelta(seconds=120) - timedelta(milliseconds=1)
    assert await h.recover_commanded(120, 10, p) == 0
    still = await w.upgrades.get(intent.upgrade_id)
    assert still is not None
    assert still.state == S.COMMANDED
    w.clock.now = NOW + timedelta(seconds=120)
    assert await h.recover_commanded(120, 10, p) == 1
    back = await w.upgrades.get(intent.upgrade_id)
    assert back is not None
    assert (back.state, back.attempt) == (S.PENDING, 0)


async def test_an_unsent_intent_whose_device_went_offline_and_back_is_still_given_back() -> None:
    """The scale-out e2e's plug that timed out with no command at Tuya: its replica was SIGKILLed between
    the intent and the call; the device then went offline and came back (presence churn) before recovery's
    grace was over. Back online it was called `upgrading`, which recovery never looks at; polling found
    nothing under way and our timeout failed it unsent. Without word from Tuya it is `commanded` again."""
    w = World()
    p = w.ports(POLICY)
    [intent] = await _intent(w, p)
    w.clock.now = NOW + timedelta(seconds=5)
    await h.on_device_presence(intent.device_id, False, p)
    w.clock.now = NOW + timedelta(seconds=10)
    [back] = await h.on_device_presence(intent.device_id, True, p)
    assert (back.state, back.commanded_at) == (S.COMMANDED, intent.commanded_at)
    await h.poll_upgrading(5, 10, p)  # Tuya: nothing under way (it never received the command)
    w.clock.now = NOW + timedelta(seconds=120)
    assert await h.recover_commanded(120, 10, p) == 1
    after = await w.upgrades.get(intent.upgrade_id)
    assert after is not None
    assert (after.state, after.attempt, after.reason) == (S.PENDING, 0, up.NOT_RECEIVED)
    w.clock.now = NOW + timedelta(seconds=POLICY.attempt_timeout_s + 1)
    await h.expire_deadlines(10, p)
    assert await h.dispatch("r1", "EU", 10, p) == 1  # sent once, under the same attempt number
    assert w.tuya.commands == [("EU-000", 0)]
    assert await w.progress.counts("r1", "EU", F) == w.progress.recount("r1", "EU", F)


async def test_an_intent_not_sent_within_its_window_is_given_back_never_sent_late() -> None:
    w = World()
    p = replace(w.ports(POLICY), command_window_s=5.0)
    [intent] = await _intent(w, p)
    w.clock.now = NOW + timedelta(seconds=5, milliseconds=1)  # a stalled process
    await h._send(intent, p)
    after = await w.upgrades.get(intent.upgrade_id)
    assert after is not None
    assert (after.state, after.attempt, w.tuya.commands) == (S.PENDING, 0, [])


async def test_a_command_call_is_abandoned_after_its_window_and_left_to_recovery() -> None:
    class Hanging(FakeTuya):
        async def confirm_upgrade(self, device_id: str, channel: int) -> None:
            await asyncio.sleep(5)  # real time: the call never answers

    w = World(tuya=Hanging())
    p = replace(w.ports(POLICY), command_window_s=0.05)
    [intent] = await _intent(w, p)
    after = await h._send(intent, p)
    assert (after.state, after.attempt) == (S.COMMANDED, 1)  # outcome unknown: recovery asks Tuya


class Outage(FakeUpgrades):
    """The database is away for the next `down` writes."""

    down: int = 0

    async def save(self, upgrade: up.DeviceUpgrade, expected_version: int, outbox: Sequence[Any]) -> bool:
        if self.down:
            self.down -= 1
            raise ConnectionError("database unreachable")
        return await super().save(upgrade, expected_version, outbox)


async def test_a_refusal_is_recorded_through_a_short_database_outage() -> None:
    """Not recorded, recovery would give the attempt back and send it again (Tuya counted it refused)."""
    w = World(upgrades=Outage())
    p = w.ports(POLICY)
    [intent] = await _intent(w, p)
    w.tuya.refuse = {"EU-000"}
    assert isinstance(w.upgrades, Outage)
    w.upgrades.down = 3
    after = await h._send(intent, p)
    assert (after.state, after.attempt) == (S.RETRYING, 1)
    assert w.clock.now - NOW < timedelta(seconds=2 * p.command_window_s)


async def test_a_stale_recovery_does_not_give_back_the_attempt_recorded_again() -> None:
    """Recovery read an intent, then (before its write) the attempt was given back and recorded again by a
    dispatcher, who may have sent it: recovery's decision was about the old intent and changes nothing."""
    w = World()
    p = w.ports(POLICY)
    [first] = await _intent(w, p)
    w.clock.now = NOW + timedelta(minutes=3)
    back = await h.apply_transition(p, first, lambda cur: up.give_back(cur, first, w.clock()))
    again = await h.apply_transition(p, back, lambda cur: up.command(cur, POLICY, w.clock()))
    assert again.attempt == first.attempt

    class Stale(FakeUpgrades):
        async def commanded_before(self, before: Any, limit: int) -> list[up.DeviceUpgrade]:
            return [first]

    stale = Stale()
    stale.docs = w.upgrades.docs
    await h.recover_commanded(120, 10, replace(p, upgrades=stale))
    now = await w.upgrades.get(first.upgrade_id)
    assert now == again


async def test_a_refused_command_fails_the_attempt_and_retries_after_the_backoff() -> None:
    w = World()
    p = w.ports(POLICY)
    await fleet(w, {"EU": 1})
    await released(w, p, [RegionPlan("EU")])
    w.tuya.refuse = {"EU-000"}
    await h.dispatch("r1", "EU", 10, p)
    u = await w.upgrades.get("r1:EU-000")
    assert u is not None
    assert (u.state, u.retry_at) == (S.RETRYING, NOW + timedelta(seconds=60))
    w.clock.now = NOW + timedelta(seconds=60)
    await h.dispatch("r1", "EU", 10, p)
    u = await w.upgrades.get("r1:EU-000")
    assert u is not None
    assert (u.state, u.attempt) == (S.FAILED, 2)
    assert w.locks.held == {}  # a settled upgrade frees the device's channel


async def test_one_channel_at_a_time_across_releases() -> None:
    w = World()
    p = w.ports(POLICY)
    await fleet(w, {"EU": 1})
    await released(w, p, [RegionPlan("EU")], channel=0, rid="module")
    await released(w, p, [RegionPlan("EU")], channel=9, rid="mcu")
    assert await h.dispatch("module", "EU", 10, p) == 1
    assert await h.dispatch("mcu", "EU", 10, p) == 0  # the module upgrade is in flight
    await h.on_device_version("EU-000", 0, "1.2.0", p)
    assert await h.dispatch("mcu", "EU", 10, p) == 1
    assert w.tuya.commands == [("EU-000", 0), ("EU-000", 9)]


async def test_done_is_not_success_and_offline_devices_keep_their_time() -> None:
    w = World()
    p = w.ports(POLICY)
    await fleet(w, {"EU": 2})
    await released(w, p, [RegionPlan("EU")])
    await h.dispatch("r1", "EU", 10, p)
    await h.on_device_progress("EU-000", 0, T.DONE, 100, p)
    await h.on_device_presence("EU-001", False, p)
    w.clock.now = NOW + timedelta(hours=1)
    assert await h.expire_deadlines(10, p) == 1  # only the online one's timeout ran out
    done, offline = await w.upgrades.get("r1:EU-000"), await w.upgrades.get("r1:EU-001")
    assert done is not None
    assert offline is not None
    assert (done.state, offline.state) == (S.RETRYING, S.WAITING)


async def test_failures_halt_only_their_region_and_counters_equal_a_recount() -> None:
    w = World()
    p = w.ports(POLICY)
    await fleet(w, {"EU": 10, "US": 10})
    plans = [
        RegionPlan(r, canary=Canary(quantity=5), promote_at=Threshold(0.8, 5), halt_at=Threshold(0.3, 4))
        for r in ("EU", "US")
    ]
    await released(w, p, plans)
    for region in ("EU", "US"):
        await h.dispatch("r1", region, 10, p)
    for i, (d, _) in enumerate(list(w.tuya.commands)):
        if d.startswith("EU") and i % 2:
            await h.on_device_error(d, 0, 205, p)
            await h.on_device_error(d, 0, 205, p)  # a duplicate changes nothing
        else:
            await h.on_device_version(d, 0, "1.2.0", p)
    eu = await h.evaluate_rollout("r1", "EU", p)
    us = await h.evaluate_rollout("r1", "US", p)
    assert eu.status == RolloutStatus.RUNNING  # failed attempts retry: not failed for good yet
    w.clock.now = NOW + timedelta(minutes=2)
    await h.dispatch("r1", "EU", 10, p)
    for d, _ in w.tuya.commands[10:]:
        await h.on_device_error(d, 0, 205, p)
    eu = await h.evaluate_rollout("r1", "EU", p)
    assert (eu.status, us.status, us.stage) == (RolloutStatus.HALTED, RolloutStatus.RUNNING, F)
    assert await h.dispatch("r1", "EU", 10, p) == 0
    for region, stage in (("EU", C), ("US", C), ("US", F)):
        assert await w.progress.counts("r1", region, stage) == w.progress.recount("r1", region, stage)


async def test_a_region_halts_on_its_failures_over_all_its_stages() -> None:
    w = World()
    p = w.ports(UpgradePolicy(max_attempts=1, attempt_timeout_s=600))
    await fleet(w, {"EU": 20})
    plan = RegionPlan(
        "EU", canary=Canary(quantity=10), promote_at=Threshold(0.8, 10), halt_at=Threshold(0.2, 10)
    )
    await released(w, p, [plan])
    assert await h.dispatch("r1", "EU", 10, p) == 10
    for i, (d, _) in enumerate(w.tuya.commands):
        if i == 0:
            await h.on_device_error(d, 0, 205, p)  # 1 of 10 failed: the canary passes
        else:
            await h.on_device_version(d, 0, "1.2.0", p)
    r = await h.evaluate_rollout("r1", "EU", p)
    assert (r.status, r.stage) == (RolloutStatus.RUNNING, F)
    assert await h.dispatch("r1", "EU", 10, p) == 10
    for d, _ in w.tuya.commands[10:12]:
        await h.on_device_error(d, 0, 205, p)
    # the full stage alone: 2 settled, below its minimum sample; the region: 3 failed of 12 settled
    r = await h.evaluate_rollout("r1", "EU", p)
    assert r.status == RolloutStatus.HALTED
    [halted] = [
        body["data"]
        for e in w.rollouts.outbox
        if e.event is not None and (body := orjson.loads(e.event.body))["type"] == "ota.release.halted.v1"
    ]
    assert (halted["stage"], halted["sample_size"], halted["failure_rate"]) == ("full", 12, 0.25)


async def test_a_resumed_region_does_not_halt_again_on_the_failures_that_halted_it() -> None:
    w = World()
    p = w.ports(UpgradePolicy(max_attempts=1, attempt_timeout_s=600))
    await fleet(w, {"EU": 20})
    await released(w, p, [RegionPlan("EU", halt_at=Threshold(0.3, 4))])
    assert await h.dispatch("r1", "EU", 4, p) == 4
    for d, _ in w.tuya.commands:
        await h.on_device_error(d, 0, 205, p)
    assert (await h.evaluate_rollout("r1", "EU", p)).status == RolloutStatus.HALTED
    await h.resume_rollout("r1", "EU", "ops", p)
    assert (await h.evaluate_rollout("r1", "EU", p)).status == RolloutStatus.RUNNING
    assert await h.dispatch("r1", "EU", 4, p) == 4
    since = [d for d, _ in w.tuya.commands[4:]]
    for d in since[:3]:
        await h.on_device_version(d, 0, "1.2.0", p)
    await h.on_device_error(since[3], 0, 205, p)  # 1 of 4 since the resume: under 30%
    assert (await h.evaluate_rollout("r1", "EU", p)).status == RolloutStatus.RUNNING
    assert await h.dispatch("r1", "EU", 2, p) == 2
    for d, _ in w.tuya.commands[8:]:
        await h.on_device_error(d, 0, 205, p)  # 3 of 6 since the resume
    assert (await h.evaluate_rollout("r1", "EU", p)).status == RolloutStatus.HALTED


async def test_a_canary_is_sized_from_the_counts_and_never_takes_a_device_activated_after_it_started() -> (
    None
):
    w = World()
    p = w.ports(POLICY)
    await fleet(w, {"EU": 40})
    plan = RegionPlan("EU", canary=Canary(ratio=ratio("0.25")), promote_at=Threshold(0.5, 3))
    await released(w, p, [plan])
    await w.devices.record(DeviceRecord("EU-late", "p1", "EU", NOW + timedelta(minutes=1), {0: "1.1.0"}))
    w.clock.now = NOW + timedelta(minutes=2)
    r = await w.rollouts.get("r1", "EU")
    assert r is not None
    assert await h.plan_stage(r, p) == 10  # planning again: the same walk, nothing added
    while await h.dispatch("r1", "EU", 3, p):
        pass
    canary = [d for d, _ in w.tuya.commands]
    assert len(canary) == 10
    assert "EU-late" not in canary
    assert await w.progress.counts("r1", "EU", C) == w.progress.recount("r1", "EU", C)
    # the same release walks the same way: another world picks the same canary
    again = World()
    q = again.ports(POLICY)
    await fleet(again, {"EU": 40})
    await released(again, q, [plan])
    while await h.dispatch("r1", "EU", 7, q):
        pass
    assert sorted(d for d, _ in again.tuya.commands) == sorted(canary)


async def test_promotion_ends_the_canary_walk_and_what_it_had_not_reached_joins_the_full_stage() -> None:
    w = World()
    p = w.ports(POLICY)
    await fleet(w, {"EU": 40})
    await released(w, p, [RegionPlan("EU", canary=Canary(quantity=30), promote_at=Threshold(0.5, 3))])
    assert await h.dispatch("r1", "EU", 4, p) == 4  # the walk claimed 20 ahead
    for d, _ in w.tuya.commands:
        await h.on_device_version(d, 0, "1.2.0", p)
    r = await h.evaluate_rollout("r1", "EU", p)
    assert r.stage == F
    canary = await w.progress.counts("r1", "EU", C)
    assert (canary.targeted, canary.succeeded, canary.pending) == (20, 4, 16)  # claimed ones stay
    while await h.dispatch("r1", "EU", 9, p):
        pass
    assert sorted(d for d, _ in w.tuya.commands) == sorted(f"EU-{i:03d}" for i in range(40))
    full = await w.progress.counts("r1", "EU", F)
    assert (full.targeted, full.upgrading) == (20, 20)
    for stage in (C, F):
        assert await w.progress.counts("r1", "EU", stage) == w.progress.recount("r1", "EU", stage)


async def test_stopping_a_walk_cancels_what_it_had_not_claimed() -> None:
    w = World()
    p = w.ports(POLICY)
    await fleet(w, {"EU": 100})
    await released(w, p, [RegionPlan("EU")])
    assert await h.dispatch("r1", "EU", 5, p) == 5  # claimed 20 ahead
    await h.stop_rollout("r1", "EU", p)
    counts = await w.progress.counts("r1", "EU", F)
    assert (counts.targeted, counts.upgrading, counts.cancelled, counts.pending) == (100, 5, 95, 0)
    assert counts == w.progress.recount("r1", "EU", F)
    assert await h.dispatch("r1", "EU", 5, p) == 0
    assert not await w.plans.has_open("r1", "EU")


async def test_stop_cancels_what_has_not_started_and_finishes_the_region() -> None:
    w = World()
    p = w.ports(POLICY)
    await fleet(w, {"EU": 4})
    await released(w, p, [RegionPlan("EU")])
    await h.dispatch("r1", "EU", 1, p)
    stopped = await h.stop_rollout("r1", "EU", p)
    assert stopped.status == RolloutStatus.STOPPED
    counts = await w.progress.counts("r1", "EU", F)
    assert (counts.cancelled, counts.upgrading) == (3, 1)
    assert counts == w.progress.recount("r1", "EU", F)
    with pytest.raises(ReleaseError):
        await h.resume_rollout("r1", "EU", "ops", p)


async def test_whole_release_commands_apply_per_region() -> None:
    w = World()
    p = w.ports(POLICY)
    await fleet(w, {"EU": 1, "US": 1})
    await released(w, p, [RegionPlan("EU"), RegionPlan("US")])
    paused = await h.for_each_region("r1", p, lambda region: h.pause_rollout("r1", region, "ops", None, p))
    assert [r.status for r in paused] == [RolloutStatus.PAUSED] * 2
    assert await h.dispatch("r1", "EU", 10, p) == 0


async def test_late_joiners_join_a_running_full_stage_and_planning_again_adds_nothing_twice() -> None:
    w = World()
    p = w.ports(POLICY)
    await fleet(w, {"EU": 2})
    await released(w, p, [RegionPlan("EU")])
    late = DeviceRecord("EU-late", "p1", "EU", NOW + timedelta(hours=1), {0: "1.0"})
    await w.devices.record(late)
    w.clock.now = NOW + timedelta(hours=2)
    assert await h.plan_late_joiners("r1", "EU", p) == 1
    # the same minute (a repeat after a crash, another replica): the same chunk, nothing added or counted
    assert await h.plan_late_joiners("r1", "EU", p) == 1
    assert (len(w.plans.walks), len(w.plans.chunks)) == (1, 1)  # the stage's walk, the late joiners' chunk
    counts = await w.progress.counts("r1", "EU", F)
    assert (counts.targeted, counts.pending) == (3, 3)
    assert counts == w.progress.recount("r1", "EU", F)
    w.clock.now = NOW + timedelta(hours=3)
    assert await h.plan_late_joiners("r1", "EU", p) == 0  # a later round finds nobody new


async def _upgrade_all(w: World, p: Ports, region: str) -> None:
    """Dispatch the region until nothing is left, every commanded device reporting the new version."""
    while await h.dispatch("r1", region, 100, p):
        pass
    for d, _ in w.tuya.commands:
        await h.on_device_version(d, 0, "1.2.0", p)


async def _all_upgraded(n: int, plan: RegionPlan | None = None) -> tuple[World, Ports]:
    """A full stage of `n` EU devices, every one upgraded (the walk over), not evaluated yet."""
    w = World()
    p = w.ports(POLICY)
    await fleet(w, {"EU": n})
    await released(w, p, [plan or RegionPlan("EU")])
    await _upgrade_all(w, p, "EU")
    return w, p


async def _completes_with_it(w: World, p: Ports, device_id: str) -> None:
    """The held stage goes on: the device is commanded, then the stage completes, counted as recounted."""
    await _upgrade_all(w, p, "EU")
    assert (device_id, 0) in w.tuya.commands
    assert (await h.evaluate_rollout("r1", "EU", p)).status == RolloutStatus.COMPLETED
    assert await w.progress.counts("r1", "EU", F) == w.progress.recount("r1", "EU", F)


@pytest.mark.parametrize("activated", [timedelta(hours=-1), timedelta(minutes=1)], ids=["behind", "late"])
async def test_a_full_stage_does_not_complete_without_a_device_of_its_buckets(activated: timedelta) -> None:
    """The scale-out e2e: the region completed with plugs of it never claimed. `behind`: a device activated
    before the stage started whose versions were fetched once the walk had passed its position (no late
    joiner: the walk never comes back). `late`: a late joiner in the directory, the region done before the
    minute's late-joiner round. Either is planned when the stage would complete, and the stage waits."""
    w, p = await _all_upgraded(30)
    [walk] = w.plans.walks.values()
    assert walk.ended
    late = DeviceRecord("EU-late", "p1", "EU", NOW + activated, {0: "1.1.0", 9: "3.0"})
    await w.devices.record(late)
    w.clock.now = NOW + timedelta(minutes=2)
    assert (await h.evaluate_rollout("r1", "EU", p)).status == RolloutStatus.RUNNING
    assert await h.evaluate_rollout("r1", "EU", p) == await w.rollouts.get("r1", "EU")  # no second round
    counts = await w.progress.counts("r1", "EU", F)
    assert (counts.targeted, counts.pending, counts.succeeded) == (31, 1, 30)
    assert counts == w.progress.recount("r1", "EU", F)
    await _completes_with_it(w, p, "EU-late")


async def test_a_full_stage_without_late_joiners_completes_without_them() -> None:
    w, p = await _all_upgraded(5, RegionPlan("EU", late_joiners=False))
    await w.devices.record(DeviceRecord("EU-late", "p1", "EU", NOW + timedelta(minutes=1), {0: "1.1.0"}))
    w.clock.now = NOW + timedelta(minutes=2)
    assert (await h.evaluate_rollout("r1", "EU", p)).status == RolloutStatus.COMPLETED


async def test_a_late_joiner_whose_versions_are_not_fetched_yet_holds_the_full_stage() -> None:
    w, p = await _all_upgraded(5)
    w.clock.now = NOW + timedelta(minutes=2)
    await h.on_device_seen("EU-new", "p1", "EU", w.clock(), p, activated=True, changed=True)  # bindUser
    await h.on_device_seen("other", "p2", "EU", w.clock(), p, activated=True, changed=True)  # not the product
    assert (await h.evaluate_rollout("r1", "EU", p)).status == RolloutStatus.RUNNING
    w.tuya.versions["EU-new"] = {0: "1.1.0"}
    await h.refresh_directory(10, p)
    assert (await h.evaluate_rollout("r1", "EU", p)).status == RolloutStatus.RUNNING  # planned now
    await _completes_with_it(w, p, "EU-new")


async def test_a_late_joiner_whose_versions_cannot_be_fetched_holds_the_stage_ten_minutes_at_most() -> None:
    w, p = await _all_upgraded(5)
    w.clock.now = NOW + timedelta(minutes=2)
    await h.on_device_seen("EU-new", "p1", "EU", w.clock(), p, activated=True, changed=True)
    w.clock.now = NOW + timedelta(minutes=11, seconds=59)
    assert (await h.evaluate_rollout("r1", "EU", p)).status == RolloutStatus.RUNNING
    w.clock.now = NOW + timedelta(minutes=12, seconds=1)
    assert (await h.evaluate_rollout("r1", "EU", p)).status == RolloutStatus.COMPLETED


async def test_late_joiners_planned_after_the_region_completed_are_cancelled_not_left_pending() -> None:
    """The scale-out e2e's rerun: a late-joiner round read the region running, the other replica completed
    it, then the round added its chunk: pending for ever in a completed region. It is cancelled."""
    w, p = await _all_upgraded(5)
    stale = await w.rollouts.get("r1", "EU")
    assert stale is not None
    w.clock.now = NOW + timedelta(minutes=2)
    assert (await h.evaluate_rollout("r1", "EU", p)).status == RolloutStatus.COMPLETED
    await w.devices.record(DeviceRecord("EU-late", "p1", "EU", NOW + timedelta(minutes=1), {0: "1.1.0"}))
    assert await h.plan_stage(stale, p, round_=1) == 1
    counts = await w.progress.counts("r1", "EU", F)
    assert (counts.pending, counts.cancelled) == (0, 1)
    assert counts == w.progress.recount("r1", "EU", F)
    assert (await h.evaluate_rollout("r1", "EU", p)).status == RolloutStatus.COMPLETED


async def test_a_completion_decided_before_late_joiners_were_planned_loses_to_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The other order: the completion checked that nothing is open, then the other replica planned late
    joiners; the completion's conditional write loses (their planning bumped the rollout) and it decides
    again."""
    w, p = await _all_upgraded(5)
    w.clock.now = NOW + timedelta(minutes=2)
    checked = w.plans.has_open

    async def then_planned(release_id: str, region: str) -> bool:
        found = await checked(release_id, region)
        if not w.devices.items.get("EU-late"):
            w.devices.items["EU-late"] = DeviceRecord("EU-late", "p1", "EU", w.clock(), {0: "1.1.0"})
            assert await h.plan_late_joiners("r1", "EU", p) == 1
        return found

    monkeypatch.setattr(w.plans, "has_open", then_planned)
    assert (await h.evaluate_rollout("r1", "EU", p)).status == RolloutStatus.RUNNING
    monkeypatch.setattr(w.plans, "has_open", checked)
    await _completes_with_it(w, p, "EU-late")


async def test_planning_writes_one_walk_and_an_upgrade_exists_only_once_dispatched() -> None:
    w = World()
    p = w.ports(POLICY)
    await fleet(w, {"EU": 1200})
    await released(w, p, [RegionPlan("EU")])
    assert (len(w.plans.walks), w.plans.chunks, w.upgrades.docs) == (1, {}, {})
    counts = await w.progress.counts("r1", "EU", F)
    assert (counts.targeted, counts.pending) == (1200, 1200)
    assert counts == w.progress.recount("r1", "EU", F)  # planned ids not claimed yet count as pending
    assert await h.dispatch("r1", "EU", 30, p) == 30
    assert len(w.upgrades.docs) == 30
    counts = await w.progress.counts("r1", "EU", F)
    assert (counts.pending, counts.upgrading) == (1170, 30)
    assert counts == w.progress.recount("r1", "EU", F)
    # the evaluator does not complete a stage whose walk has not reached every device
    for d, _ in w.tuya.commands:
        await h.on_device_version(d, 0, "1.2.0", p)
    assert (await h.evaluate_rollout("r1", "EU", p)).status == RolloutStatus.RUNNING
    # the rest, in small rounds: every device once, then the stage completes
    while await h.dispatch("r1", "EU", 100, p):
        pass
    assert sorted(d for d, _ in w.tuya.commands) == sorted(f"EU-{i:03d}" for i in range(1200))
    for d, _ in w.tuya.commands[30:]:
        await h.on_device_version(d, 0, "1.2.0", p)
    assert (await h.evaluate_rollout("r1", "EU", p)).status == RolloutStatus.COMPLETED
    counts = await w.progress.counts("r1", "EU", F)
    assert (counts.targeted, counts.succeeded) == (1200, 1200)
    assert counts == w.progress.recount("r1", "EU", F)


class CrashOnce(FakeUpgrades):
    """The dispatcher dies after its claim, before creating the claimed upgrades."""

    crash: bool = True

    async def create(self, upgrades: Sequence[up.DeviceUpgrade]) -> list[up.DeviceUpgrade]:
        if self.crash:
            self.crash = False
            raise ConnectionError("killed")
        return await super().create(upgrades)


async def test_ids_a_crash_left_claimed_are_created_after_the_grace_and_commanded_once() -> None:
    upgrades = CrashOnce()
    w = World(upgrades=upgrades)
    p = w.ports(POLICY)
    await fleet(w, {"EU": 25})
    await released(w, p, [RegionPlan("EU")])
    with pytest.raises(ConnectionError):
        await h.dispatch("r1", "EU", 2, p)  # claimed ahead, created none
    [walk] = w.plans.walks.values()
    [lost] = walk.claims
    while await h.dispatch("r1", "EU", 10, p):  # the walk goes on past the lost claim
        pass
    # the lost claim's ids wait out the grace (their dispatcher may still be creating them)
    assert len(w.tuya.commands) == 25 - len(lost.device_ids)
    assert not {d for d, _ in w.tuya.commands} & set(lost.device_ids)
    counts = await w.progress.counts("r1", "EU", F)
    assert (counts.targeted, counts.pending) == (25, len(lost.device_ids))
    assert counts == w.progress.recount("r1", "EU", F)
    assert await w.plans.has_open("r1", "EU")
    w.clock.now = NOW + timedelta(seconds=p.claim_grace_s)
    assert await h.dispatch("r1", "EU", 30, p) == len(lost.device_ids)
    assert await h.dispatch("r1", "EU", 30, p) == 0
    assert sorted(w.tuya.commands) == [(f"EU-{i:03d}", 0) for i in range(25)]  # each once
    assert not await w.plans.has_open("r1", "EU")
    counts = await w.progress.counts("r1", "EU", F)
    assert (counts.targeted, counts.upgrading) == (25, 25)
    assert counts == w.progress.recount("r1", "EU", F)


class StoppedWhileCreating(FakeUpgrades):
    """An operator stops the region between a dispatcher's claim and its creating the claimed upgrades."""

    ports: Ports | None = None

    async def create(self, upgrades: Sequence[up.DeviceUpgrade]) -> list[up.DeviceUpgrade]:
        assert self.ports is not None
        ports, self.ports = self.ports, None
        await h.stop_rollout("r1", "EU", ports)
        return await super().create(upgrades)


async def test_stopping_between_a_claim_and_its_upgrades_cancels_them_and_commands_nothing() -> None:
    upgrades = StoppedWhileCreating()
    w = World(upgrades=upgrades)
    p = w.ports(POLICY)
    await fleet(w, {"EU": 5})
    await released(w, p, [RegionPlan("EU")])
    # the round's rollout was read while running; the stop comes mid-way
    upgrades.ports = p
    r = await w.rollouts.get("r1", "EU")
    assert r is not None
    assert await h.create_planned(r, 2, p) == []
    counts = await w.progress.counts("r1", "EU", F)
    assert (counts.targeted, counts.cancelled) == (5, 5)
    assert counts == w.progress.recount("r1", "EU", F)
    assert w.tuya.commands == []


async def test_no_late_joiners_when_not_configured() -> None:
    w = World()
    p = w.ports(POLICY)
    await fleet(w, {"EU": 2})
    await released(w, p, [RegionPlan("EU", late_joiners=False)])
    await w.devices.record(DeviceRecord("EU-late", "p1", "EU", NOW + timedelta(hours=1), {0: "1.0"}))
    assert await h.plan_late_joiners("r1", "EU", p) == 0


async def test_done_is_verified_against_the_version_the_device_reports() -> None:
    w = World()
    p = w.ports(POLICY)
    await fleet(w, {"EU": 2})
    await released(w, p, [RegionPlan("EU")])
    await h.dispatch("r1", "EU", 10, p)
    for d in ("EU-000", "EU-001"):
        await h.on_ota_progress(
            ota_push(device_id=d, product_id="p1", channel=0, upgrade_status=T.DONE, progress_percent=100),
            p,
        )
    w.tuya.versions = {"EU-000": {0: "1.2.0"}, "EU-001": {0: "1.1.0"}}  # EU-001 says done but stays old
    assert await h.verify_done(10, p) == 2
    ok, stale = await w.upgrades.get("r1:EU-000"), await w.upgrades.get("r1:EU-001")
    assert ok is not None
    assert stale is not None
    assert (ok.state, stale.state) == (S.SUCCEEDED, S.RETRYING)


async def test_a_sleepy_device_completes_when_it_wakes_and_runs_the_new_version() -> None:
    w = World()
    p = w.ports(POLICY)
    await fleet(w, {"EU": 1})
    await released(w, p, [RegionPlan("EU")])
    await h.dispatch("r1", "EU", 10, p)
    push = ota_push(device_id="EU-000", product_id="p1", channel=0, upgrade_status=T.WAITING_FOR_WAKE_UP)
    [u] = await h.on_ota_progress(push, p)
    assert u.state == S.WAITING
    woke = ota_push(
        device_id="EU-000", product_id="p1", channel=0, upgrade_status=T.DONE, firmware_version="1.2.0"
    )
    [u] = await h.on_ota_progress(woke, p)
    assert (u.state, u.tuya_done) == (S.UPGRADING, True)  # the push's version is no proof
    w.tuya.versions = {"EU-000": {0: "1.2.0"}}
    await h.verify_done(10, p)
    done = await w.upgrades.get("r1:EU-000")
    assert done is not None
    assert done.state == S.SUCCEEDED


class WakesDuringPoll(FakeTuya):
    """Tuya's progress API answers 5 (the device still asleep); before ota applies that answer, the device
    wakes, upgrades and its pushes (2, then 3) are handled: the answer is stale when it is applied."""

    ports: Ports | None = None

    async def progress(self, device_id: str, channel: int) -> tuple[T, int | None]:
        assert self.ports is not None
        for status in (T.UPGRADING, T.DONE):
            push = ota_push(device_id=device_id, product_id="p1", channel=channel, upgrade_status=status)
            await h.on_ota_progress(push, self.ports)
        return T.WAITING_FOR_WAKE_UP, 0


async def test_a_poll_answered_before_the_wake_does_not_leave_a_done_sleepy_device_waiting() -> None:
    # the e2e's stuck sleepy sensors: the stale 5 moved the done upgrade back to waiting, where neither
    # verification (upgrading and done) nor polling (not done) looks at it again
    w = World(tuya=WakesDuringPoll())
    p = w.ports(POLICY)
    assert isinstance(w.tuya, WakesDuringPoll)
    w.tuya.ports = p
    await fleet(w, {"EU": 1})
    await released(w, p, [RegionPlan("EU")])
    await h.dispatch("r1", "EU", 10, p)
    push = ota_push(device_id="EU-000", product_id="p1", channel=0, upgrade_status=T.WAITING_FOR_WAKE_UP)
    [u] = await h.on_ota_progress(push, p)
    assert u.state == S.WAITING
    w.clock.now = NOW + timedelta(minutes=10)
    assert await h.poll_upgrading(60, 10, p) == 1
    w.tuya.versions = {"EU-000": {0: "1.2.0"}}
    assert await h.verify_done(10, p) == 1
    done = await w.upgrades.get("r1:EU-000")
    assert done is not None
    assert done.state == S.SUCCEEDED


async def test_a_rate_limited_command_gives_its_attempt_back_and_ends_the_round() -> None:
    w = World()
    p = w.ports(POLICY)
    await fleet(w, {"EU": 3})
    await released(w, p, [RegionPlan("EU")])
    w.tuya.rate_limited = {"EU-000", "EU-001", "EU-002"}
    assert await h.dispatch("r1", "EU", 10, p) == 0
    assert len(w.tuya.commands) == 0
    states = [await w.upgrades.get(f"r1:EU-00{i}") for i in range(3)]
    assert all(u is not None and (u.state, u.attempt) == (S.PENDING, 0) for u in states)
    w.tuya.rate_limited = set()
    assert await h.dispatch("r1", "EU", 10, p) == 3
    again = await w.upgrades.get("r1:EU-000")
    assert again is not None
    assert (again.state, again.attempt) == (S.COMMANDED, 1)


class RaceOnce(FakePacing):
    """Another replica reserves between this one's read and its write, once."""

    def __init__(self) -> None:
        super().__init__()
        self.raced = False

    async def move(self, release_id: str, region: str, expected: float | None, to: float) -> bool:
        if not self.raced:
            self.raced = True
            await super().move(release_id, region, expected, to)  # the other replica's reservation
        return await super().move(release_id, region, expected, to)


async def run_rounds(
    w: World,
    p: Ports,
    seconds: float,
    replicas: int = 1,
    throttle: Throttle | None = None,
    jitter: float = 0,
    lead: Lead | None = None,
) -> None:
    """Replicas take turns at dispatch rounds, as the loop runs them: each reserves the next quarter second
    of slots and waits for them (the fake clock moves only while someone waits); an idle round waits."""
    r = await w.rollouts.get("r1", "EU")
    assert r is not None
    rngs = [random.Random(i) for i in range(replicas)]
    step = 0
    while w.clock.now < NOW + timedelta(seconds=seconds):
        rng = rngs[step % replicas]
        step += 1
        sent = await h.paced_dispatch(
            r, p, draw=rng.random, most=50, ahead_s=0.25, throttle=throttle, lead=lead
        )
        await h.in_flight()  # the last command fired is answered before the other replica's round
        if not sent:
            await w.clock.sleep(0.25 / replicas)
        w.clock.now += timedelta(milliseconds=7)  # rounds of other replicas run out of step


@pytest.mark.parametrize(("replicas", "jitter"), [(1, 0.0), (2, 0.0), (3, 0.0), (2, 0.3)])
async def test_replicas_share_the_regions_dispatch_rate_each_command_at_its_slot(
    replicas: int, jitter: float
) -> None:
    """Together the replicas command the region's rate (10/s) on its shared schedule; without jitter no two
    commands are closer than the rate's gap (Tuya may allow no burst at all)."""
    w = World()
    w.tuya.clock = w.clock
    p = w.ports(POLICY)
    await fleet(w, {"EU": 2000})
    await released(w, p, [RegionPlan("EU", dispatch=DispatchRate(600, jitter=jitter))])
    await run_rounds(w, p, 60, replicas)
    assert 0.95 * 600 <= len(w.tuya.commands) <= (601 if jitter == 0 else 0.05 * 600 + 600)
    assert len(set(w.tuya.commands)) == len(w.tuya.commands)
    if jitter == 0:
        spacing = [(b - a).total_seconds() for a, b in zip(w.tuya.sent_at, w.tuya.sent_at[1:], strict=False)]
        assert min(spacing) >= 0.1 - 1e-5


async def test_tuyas_rate_limit_slows_the_pace_and_costs_no_attempt() -> None:
    """Tuya accepts a little less than the region's rate (one command per 105 ms, no burst): refusals slow
    the pace until it settles just under Tuya's limit; refused commands cost no attempt."""
    w = World()
    w.tuya.clock, w.tuya.limit_gap_s = w.clock, 0.105
    p = w.ports(POLICY)
    await fleet(w, {"EU": 2000})
    await released(w, p, [RegionPlan("EU", dispatch=DispatchRate(600))])
    throttle = Throttle()
    await run_rounds(w, p, 60, throttle=throttle)
    accepted = len(w.tuya.sent_at)
    assert accepted >= 0.95 * 60 / 0.105
    assert w.tuya.refused <= 0.05 * accepted
    assert throttle.factor > 1
    assert sum(u.attempt for u in w.upgrades.docs.values()) == accepted


class SlowPacing(FakePacing):
    """A loaded database: reading the region's schedule takes `delay_s` (a round's preparation)."""

    def __init__(self, clock: Any, delay_s: float) -> None:
        super().__init__()
        self.clock, self.delay_s = clock, delay_s

    async def next_at(self, release_id: str, region: str) -> float | None:
        self.clock.now += timedelta(seconds=self.delay_s)
        return await super().next_at(release_id, region)


@pytest.mark.parametrize("lead", [True, False])
async def test_a_slow_database_does_not_hold_the_pace_below_the_regions_rate(lead: bool) -> None:
    """Preparing a round takes 0.4 s (four slots at 10/s): a window of a quarter second lost the slots that
    passed meanwhile, about two commands a round; reserving ahead for what preparing takes keeps the rate."""
    w = World()
    w.pacing = SlowPacing(w.clock, 0.4)
    w.tuya.clock = w.clock
    p = w.ports(POLICY)
    await fleet(w, {"EU": 2000})
    await released(w, p, [RegionPlan("EU", dispatch=DispatchRate(600))])
    await run_rounds(w, p, 60, lead=Lead() if lead else None)
    sent = len(w.tuya.commands)
    if lead:
        assert sent >= 0.75 * 600
        assert len(set(w.tuya.commands)) == sent
    else:
        assert sent < 0.6 * 600  # the failure the lead fixes


async def test_a_lost_race_for_the_schedule_reads_again_and_takes_the_next_slots() -> None:
    w = World(pacing=RaceOnce())
    w.tuya.clock = w.clock
    p = w.ports(POLICY)
    await fleet(w, {"EU": 3})
    await released(w, p, [RegionPlan("EU", dispatch=DispatchRate(60))])
    r = await w.rollouts.get("r1", "EU")
    assert r is not None
    # another replica reserved the first three slots: this one takes the three after them
    assert await h.paced_dispatch(r, p, draw=lambda: 0.5, most=50, ahead_s=10) == 3
    await h.in_flight()
    assert w.tuya.sent_at == [NOW + timedelta(seconds=s) for s in (3, 4, 5)]
    assert await w.pacing.next_at("r1", "EU") == (NOW + timedelta(seconds=6)).timestamp()


async def test_slots_not_used_after_tuyas_rate_limit_are_given_back() -> None:
    w = World()
    p = w.ports(POLICY)
    await fleet(w, {"EU": 3})
    await released(w, p, [RegionPlan("EU", dispatch=DispatchRate(60))])
    r = await w.rollouts.get("r1", "EU")
    assert r is not None
    w.tuya.rate_limited = {"EU-000", "EU-001", "EU-002"}
    throttle = Throttle()
    assert await h.paced_dispatch(r, p, draw=lambda: 0.5, most=50, ahead_s=10, throttle=throttle) == 1
    await h.in_flight()
    assert throttle.factor > 1
    # the first slot went to Tuya's refusal (its attempt given back); the other two slots are given back
    assert await w.pacing.next_at("r1", "EU") == (NOW + timedelta(seconds=1)).timestamp()
    ups = [await w.upgrades.get(f"r1:EU-00{i}") for i in range(3)]
    assert all(u is not None and (u.state, u.attempt) == (S.PENDING, 0) for u in ups)
    assert w.tuya.commands == []


async def run_project_rounds(w: World, p: Ports, seconds: float, paces: list[h.ProjectPace | None]) -> None:
    """Each replica (its own `ProjectPace`, or None: each region on its own) runs a dispatch round of every
    running region in turn, as the loop does; time moves only while someone waits."""
    rngs = [random.Random(i) for i in range(len(paces))]
    throttles = [Throttle() for _ in paces]
    step = 0
    while w.clock.now < NOW + timedelta(seconds=seconds):
        k = step % len(paces)
        step += 1
        sent = 0
        for r in await w.rollouts.dispatching():
            sent += await h.paced_dispatch(
                r, p, draw=rngs[k].random, most=50, ahead_s=0.25, throttle=throttles[k], project=paces[k]
            )
            await h.in_flight()
        if not sent:
            await w.clock.sleep(0.25 / len(paces))
        w.clock.now += timedelta(milliseconds=7)  # rounds of other replicas run out of step


@pytest.mark.parametrize("replicas", [1, 2])
async def test_one_pace_for_the_project_keeps_every_region_and_replica_under_tuyas_limit(
    replicas: int,
) -> None:
    """Tuya's limit on the upgrade API is the project's (10/s, no burst) and two regions ask 20/s each:
    paced together, Tuya refuses nothing and accepts at least 95% of its limit, both regions served."""
    w = World()
    w.tuya.clock, w.tuya.limit_gap_s = w.clock, 0.1
    p = w.ports(POLICY)
    await fleet(w, {"EU": 1500, "US": 1500})
    await released(w, p, [RegionPlan(region, dispatch=DispatchRate(1200)) for region in ("EU", "US")])
    await run_project_rounds(w, p, 60, [h.ProjectPace(10.0) for _ in range(replicas)])
    accepted = len(w.tuya.sent_at)
    assert w.tuya.refused == 0
    assert 0.95 * 600 <= accepted <= 601
    spacing = [(b - a).total_seconds() for a, b in zip(w.tuya.sent_at, w.tuya.sent_at[1:], strict=False)]
    assert min(spacing) >= 0.1 - 1e-6
    assert len(set(w.tuya.commands)) == len(w.tuya.commands)
    assert sum(u.attempt for u in w.upgrades.docs.values()) == accepted
    eu = sum(1 for d, _ in w.tuya.commands if d.startswith("EU"))
    assert 0.3 * accepted <= eu <= 0.7 * accepted


async def test_regions_paced_each_on_their_own_ask_tuya_for_more_than_its_limit() -> None:
    """The failure the project's pace fixes: each region keeps to its own rate, together above Tuya's."""
    w = World()
    w.tuya.clock, w.tuya.limit_gap_s = w.clock, 0.1
    p = w.ports(POLICY)
    await fleet(w, {"EU": 1500, "US": 1500})
    await released(w, p, [RegionPlan(region, dispatch=DispatchRate(1200)) for region in ("EU", "US")])
    await run_project_rounds(w, p, 20, [None])
    assert w.tuya.refused > 0.1 * len(w.tuya.sent_at)


def test_regions_preparing_at_once_are_promised_no_more_than_the_project_has_free() -> None:
    pace = h.ProjectPace(10.0)
    now = NOW.timestamp()
    # a quarter second at 9.7/s holds three slots (0, 103 and 206 ms); three rounds of the replica read the
    # schedule at once and ask five each
    assert [pace.promise(None, now, 5, 0.25) for _ in range(3)] == [3, 0, 0]
    pace.settled(3)
    assert pace.promise(None, now, 2, 0.25) == 2
    assert pace.promise(now + 0.1, now, 5, 0.25) == 0  # moved on: its two slots left are promised


class StallAfterReserving(FakePacing):
    """The process stalls for `stall_s` right after reserving the project's slots (a loaded machine)."""

    def __init__(self, clock: Any, stall_s: float) -> None:
        super().__init__()
        self.clock, self.stall_s = clock, stall_s

    async def move(self, release_id: str, region: str, expected: float | None, to: float) -> bool:
        moved = await super().move(release_id, region, expected, to)
        if moved and release_id == "":
            self.clock.now += timedelta(seconds=self.stall_s)
        return moved


async def test_a_stalled_round_sends_no_burst_and_nothing_long_past_its_last_slot() -> None:
    """After a stall each command keeps a gap from the one before, and none goes more than a second past
    the round's last slot (the next slots are another round's): Tuya (10/s, no burst) refuses nothing; the
    intents that no longer fit are given back."""
    w = World()
    w.pacing = StallAfterReserving(w.clock, 1.5)
    w.tuya.clock, w.tuya.limit_gap_s = w.clock, 0.1
    p = w.ports(POLICY)
    await fleet(w, {"EU": 20})
    await released(w, p, [RegionPlan("EU", dispatch=DispatchRate(1200))])
    r = await w.rollouts.get("r1", "EU")
    assert r is not None
    pace = h.ProjectPace(10.0)
    sent = await h.paced_dispatch(r, p, draw=lambda: 0.5, most=50, ahead_s=1.0, project=pace)
    await h.in_flight()
    # ten slots in the second (0 to 927 ms); from 1.5 s a gap apart, five fit before 1.927 s
    assert (sent, len(w.tuya.sent_at), w.tuya.refused) == (5, 5, 0)
    back = [u for u in w.upgrades.docs.values() if u.state == S.PENDING and u.reason == "command not sent"]
    assert len(back) == 5


async def test_project_slots_not_used_go_back_only_while_no_one_reserved_after_them() -> None:
    w = World()
    p = w.ports(POLICY)
    pace = h.ProjectPace(10.0)
    start, gaps = await pace.reserve(p, 3, 1.0)
    assert (start, len(gaps)) == (NOW.timestamp(), 3)
    await pace.give_back(p, start, gaps, 1)  # two not used, nobody after: back
    assert await w.pacing.next_at("", "t") == start + gaps[0]
    mine, mine_gaps = await pace.reserve(p, 2, 1.0)
    other, other_gaps = await pace.reserve(p, 1, 1.0)  # another round reserves after this one
    assert other == mine + sum(mine_gaps)
    await pace.give_back(p, mine, mine_gaps, 0)  # would put two commands in one gap: kept
    assert await w.pacing.next_at("", "t") == other + sum(other_gaps)


async def test_the_directory_learns_devices_from_events_and_their_versions_from_the_openapi() -> None:
    w = World()
    p = w.ports(POLICY)
    bound = NOW - timedelta(days=3)
    await h.on_device_seen("d1", "p1", "EU", bound, p, activated=True, changed=True)  # bindUser
    await h.on_device_seen("d2", "p1", "EU", NOW, p, activated=False, changed=False)  # first heard from
    await h.on_device_seen("d3", None, "EU", NOW, p, activated=False, changed=False)  # no product: too little
    w.tuya.versions = {"d1": {0: "1.2.0"}, "d2": {0: "1.0", 9: "3.0"}}
    assert await h.refresh_directory(10, p) == 2
    assert await h.refresh_directory(10, p) == 0  # nothing marked any more
    assert w.devices.items["d1"] == DeviceRecord("d1", "p1", "EU", bound, {0: "1.2.0"})
    assert w.devices.items["d2"] == DeviceRecord("d2", "p1", "EU", NOW, {0: "1.0", 9: "3.0"})
    # a replayed older activation and presence of a known device fetch nothing
    await h.on_device_seen("d1", "p1", "EU", bound - timedelta(days=1), p, activated=True, changed=True)
    await h.on_device_seen("d2", "p1", "EU", NOW, p, activated=False, changed=False)
    assert [f.device_id for f in await w.devices.to_refresh(10)] == ["d1"]
    await h.refresh_directory(10, p)
    assert w.devices.items["d1"].activated_at == bound  # the later activation stands
    # planning counts what the events and the OpenAPI recorded: d2 is below the target, d1 is on it
    await released(w, p, [RegionPlan("EU")])
    assert await h.dispatch("r1", "EU", 10, p) == 1
    assert w.tuya.commands == [("d2", 0)]
    # the upgrade verified: the directory has the device on the new version (the next release skips it)
    await h.on_ota_progress(
        ota_push(device_id="d2", product_id="p1", channel=0, upgrade_status=T.DONE, progress_percent=100), p
    )
    w.tuya.versions["d2"] = {0: "1.2.0", 9: "3.0"}
    assert await h.verify_done(10, p) == 1
    assert w.devices.items["d2"].versions == {0: "1.2.0", 9: "3.0"}


async def test_a_device_heard_from_through_another_regions_project_stays_in_its_region_mid_walk() -> None:
    """The scale-out e2e's plugs that never got an upgrade: ingest labels every event with its project's
    data center (one ingest, `eu`), so us plugs heard from mid-rollout were moved to eu's bucket when their
    versions were fetched. us's walk no longer found them (46 planned, 36 claimed, the walk ended and the
    region completed); eu's walk had passed them. A known device keeps its region."""
    w = World()
    p = w.ports(POLICY)
    await fleet(w, {"EU": 30, "US": 30})
    await released(w, p, [RegionPlan("EU"), RegionPlan("US")])
    while await h.dispatch("r1", "EU", 10, p):
        pass  # eu's walk is over
    assert await h.dispatch("r1", "US", 5, p) == 5  # us's walk claimed a few ahead, the rest is to come
    us = [f"US-{i:03d}" for i in range(30)]
    for d in us:  # presence churn, through the eu project's stream
        await h.on_device_seen(d, "p1", "EU", NOW, p, activated=False, changed=False)
        w.tuya.versions[d] = {0: "1.1.0", 9: "3.0"}
    assert await h.refresh_directory(100, p) == 30
    while await h.dispatch("r1", "US", 10, p):
        pass
    regions = {u.device_id: u.region for u in w.upgrades.docs.values()}
    assert sorted(d for d, region in regions.items() if region == "US") == us
    assert len(regions) == 60
    [walk] = [s for s in w.plans.walks.values() if s.region == "US"]
    assert (walk.ended, walk.claimed, walk.planned) == (True, 30, 30)


async def test_an_ended_upgrade_marks_the_devices_versions_to_be_fetched_again() -> None:
    w = World()
    p = w.ports(POLICY)
    await h.on_device_seen("d1", "p1", "EU", NOW, p, activated=False, changed=False)
    w.tuya.versions = {"d1": {0: "1.0"}}
    await h.refresh_directory(10, p)
    await h.on_device_seen("d1", "p1", "EU", NOW, p, activated=False, changed=True)  # an upgrade ended
    w.tuya.versions = {"d1": {0: "1.1"}}
    assert await h.refresh_directory(10, p) == 1
    assert w.devices.items["d1"].versions == {0: "1.1"}


async def test_two_dispatchers_holding_the_same_pending_upgrade_command_it_once() -> None:
    """Both replicas read the same pending upgrade: the one whose intent write lost the race does not take
    the winner's recorded attempt for its own."""
    w = World()
    p = w.ports(POLICY)
    await fleet(w, {"EU": 1})
    await released(w, p, [RegionPlan("EU")])
    r = await w.rollouts.get("r1", "EU")
    assert r is not None
    [u] = await h.create_planned(r, 10, p)
    first = await h.dispatch_one(u, p)
    second = await h.dispatch_one(u, p)  # the same pending upgrade, as the other replica read it
    assert (first.attempt, second.attempt) == (1, 0)
    assert w.tuya.commands == [("EU-000", 0)]


class FailingFetch(FakeTuya):
    """The firmware API fails for some devices (a Tuya error on one device's fetch)."""

    def __init__(self, failing: set[str]) -> None:
        super().__init__()
        self.failing = failing

    async def current_versions(self, device_id: str) -> dict[int, str]:
        if device_id in self.failing:
            raise RuntimeError("Tuya error")
        return await super().current_versions(device_id)


async def test_a_failing_directory_refresh_does_not_hold_up_the_upkeep_rounds_verifications() -> None:
    from fleet_ota.entrypoints.loops import Loops

    w = World(tuya=FailingFetch({"bad"}))
    p = w.ports(POLICY)
    await h.on_device_seen("d2", "p1", "EU", NOW, p, activated=False, changed=False)
    w.tuya.versions = {"d2": {0: "1.0"}}
    assert await h.refresh_directory(10, p) == 1
    await released(w, p, [RegionPlan("EU")])
    assert await h.dispatch("r1", "EU", 10, p) == 1
    await h.on_device_seen("bad", "p1", "EU", NOW, p, activated=False, changed=False)  # to be fetched
    await h.on_ota_progress(
        ota_push(device_id="d2", product_id="p1", channel=0, upgrade_status=T.DONE, progress_percent=100), p
    )
    w.tuya.versions["d2"] = {0: "1.2.0"}

    async def nothing() -> int:
        return 0

    loops = Loops(
        p,
        nothing,
        nothing,
        tick_s=1,
        batch=10,
        burst=10,
        command_grace_s=60,
        poll_after_s=60,
        relay_idle_s=1,
    )
    await loops.upkeep_round()  # the refresh of "bad" fails first
    u = await w.upgrades.get("r1:d2")
    assert u is not None
    assert u.state == S.SUCCEEDED


async def _failed_then_retry_recorded(w: World, p: Ports) -> up.DeviceUpgrade:
    """EU-000 commanded (accepted) at NOW, failed at Tuya (4) a minute later; its retry recorded after the
    backoff and never sent (the process died)."""
    await fleet(w, {"EU": 1})
    await released(w, p, [RegionPlan("EU")])
    assert await h.dispatch("r1", "EU", 10, p) == 1
    w.clock.now = NOW + timedelta(minutes=1)
    w.tuya.status["EU-000"] = T.FAILED
    w.tuya.ended_at["EU-000"] = w.clock.now
    await h.on_device_progress("EU-000", 0, T.FAILED, 40, p)
    w.clock.now = NOW + timedelta(minutes=5)  # after the backoff (60 s)
    retrying = await w.upgrades.get("r1:EU-000")
    assert retrying is not None
    assert retrying.state == S.RETRYING
    return await h.apply_transition(p, retrying, lambda cur: up.command(cur, POLICY, w.clock()))


async def test_a_retry_never_sent_is_given_back_not_failed_for_the_attempt_befores_status() -> None:
    w = World()
    p = w.ports(POLICY)
    intent = await _failed_then_retry_recorded(w, p)
    assert (intent.state, intent.attempt) == (S.COMMANDED, 2)
    w.clock.now = NOW + timedelta(minutes=8)
    assert await h.recover_commanded(120, 10, p) == 1  # Tuya still shows attempt 1's 4
    after = await w.upgrades.get(intent.upgrade_id)
    assert after is not None
    assert (after.state, after.attempt, after.reason) == (S.RETRYING, 1, up.NOT_RECEIVED)
    counts = await w.progress.counts("r1", "EU", F)
    assert (counts.failed, counts.pending) == (0, 1)
    assert counts == w.progress.recount("r1", "EU", F)
    w.tuya.status["EU-000"] = T.UPGRADING  # the retry sent now starts an upgrade
    assert await h.dispatch("r1", "EU", 10, p) == 1  # attempt 2, sent once
    assert w.tuya.commands == [("EU-000", 0), ("EU-000", 0)]
    w.clock.now = NOW + timedelta(minutes=12)
    await h.recover_commanded(120, 10, p)
    sent = await w.upgrades.get(intent.upgrade_id)
    assert sent is not None
    assert (sent.state, sent.attempt) == (S.UPGRADING, 2)


async def test_a_retry_that_reached_tuya_and_failed_again_is_failed_never_sent_twice() -> None:
    """Its answer was lost; Tuya ran it and it failed within seconds (4, ended after the retry's intent):
    the same status as the attempt before's, but this attempt's. Failed (for good: the last attempt)."""
    w = World()
    p = w.ports(POLICY)
    intent = await _failed_then_retry_recorded(w, p)
    w.tuya.lose_answer = {"EU-000"}
    await h._send(intent, p)  # reaches Tuya; the answer is lost
    w.tuya.ended_at["EU-000"] = w.clock.now + timedelta(seconds=20)
    w.clock.now = NOW + timedelta(minutes=8)
    assert await h.recover_commanded(120, 10, p) == 1
    after = await w.upgrades.get(intent.upgrade_id)
    assert after is not None
    assert (after.state, after.attempt) == (S.FAILED, 2)
    w.clock.now = NOW + timedelta(hours=2)
    await h.dispatch("r1", "EU", 10, p)
    assert w.tuya.commands == [("EU-000", 0), ("EU-000", 0)]  # one command per attempt
    assert await w.progress.counts("r1", "EU", F) == w.progress.recount("r1", "EU", F)


async def test_recovery_asks_the_firmware_api_only_for_a_retrys_final_failure() -> None:
    w = World()
    p = w.ports(POLICY)
    [intent] = await _intent(w, p)  # a first attempt: no attempt before to blame
    w.tuya.status["EU-000"] = T.FAILED
    w.clock.now = NOW + timedelta(minutes=3)
    await h.recover_commanded(120, 10, p)
    assert w.tuya.ended_asked == 0
    after = await w.upgrades.get(intent.upgrade_id)
    assert after is not None
    assert after.state == S.RETRYING
