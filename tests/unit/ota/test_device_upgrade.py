"""The per-device upgrade state machine: every transition, retry and timeout edges, counter deltas."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fleet_contracts.device import OtaUpgradeStatus as T
from fleet_contracts.ota import DeviceUpgradeState as S
from fleet_contracts.ota import ReleaseStage
from fleet_ota.domain import upgrade as up
from fleet_ota.domain.upgrade import DeviceUpgrade, UpgradePolicy

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 29, 12, tzinfo=UTC)
POLICY = UpgradePolicy(max_attempts=2, backoff_s=60, backoff_max_s=90, attempt_timeout_s=600)


def fresh() -> DeviceUpgrade:
    return DeviceUpgrade("r1", "EU", ReleaseStage.CANARY, "d1", "p1", 0, "1.2.0")


def commanded(at: datetime = NOW) -> DeviceUpgrade:
    return up.command(fresh(), POLICY, at).upgrade


def upgrading(at: datetime = NOW) -> DeviceUpgrade:
    return up.on_progress(commanded(at), T.UPGRADING, 10, POLICY, at).upgrade


def test_command_records_the_attempt_intent_and_its_deadline() -> None:
    change = up.command(fresh(), POLICY, NOW)
    u = change.upgrade
    assert (u.state, u.attempt, u.version, u.deadline) == (S.COMMANDED, 1, 1, NOW + timedelta(seconds=600))
    assert change.event is not None
    assert (change.event.previous_state, change.event.state, change.event.attempt) == (
        S.PENDING,
        S.COMMANDED,
        1,
    )
    assert change.counter_delta() == {"pending": -1, "upgrading": 1}


def test_a_commanded_attempt_is_never_commanded_again() -> None:
    u = commanded()
    again = up.command(u, POLICY, NOW + timedelta(hours=1))
    assert not again.changed
    assert again.upgrade is u


def test_progress_moves_to_upgrading_then_updates_within_the_state_without_an_event() -> None:
    u = upgrading()
    assert (u.state, u.progress_percent) == (S.UPGRADING, 10)
    more = up.on_progress(u, T.UPGRADING, 55, POLICY, NOW)
    assert not more.changed
    assert more.upgrade.progress_percent == 55


def test_tuya_done_is_not_success_only_the_reported_version_is() -> None:
    done = up.on_progress(upgrading(), T.DONE, 100, POLICY, NOW).upgrade
    assert done.state == S.UPGRADING
    assert done.tuya_done
    ok = up.on_version(done, "1.2", POLICY, NOW)  # 1.2 == 1.2.0
    assert ok.upgrade.state == S.SUCCEEDED
    assert ok.counter_delta() == {"upgrading": -1, "succeeded": 1}


def test_done_but_still_on_the_old_version_fails_the_attempt() -> None:
    done = up.on_progress(upgrading(), T.DONE, 100, POLICY, NOW).upgrade
    failed = up.on_version(done, "1.1.9", POLICY, NOW).upgrade
    assert failed.state == S.RETRYING
    assert failed.reported_version == "1.1.9"
    assert "still runs 1.1.9" in (failed.reason or "")


def test_an_old_version_report_before_done_changes_nothing_but_the_record() -> None:
    u = upgrading()
    change = up.on_version(u, "1.1.0", POLICY, NOW)
    assert not change.changed
    assert change.upgrade.state == S.UPGRADING


@pytest.mark.parametrize(
    ("status", "timed_out"), [(T.FAILED, False), (T.TIMED_OUT, True)], ids=["failed-4", "timed-out-7"]
)
def test_tuya_failure_retries_with_backoff_then_fails_for_good(status: T, timed_out: bool) -> None:
    first = up.on_progress(upgrading(), status, None, POLICY, NOW).upgrade
    assert first.state == S.RETRYING
    assert first.retry_at == NOW + timedelta(seconds=60)
    assert not up.command(first, POLICY, NOW + timedelta(seconds=59)).changed  # backoff not over
    second = up.command(first, POLICY, NOW + timedelta(seconds=60)).upgrade
    assert (second.state, second.attempt) == (S.COMMANDED, 2)
    last = up.on_progress(second, status, None, POLICY, NOW).upgrade
    assert last.state == (S.TIMED_OUT if timed_out else S.FAILED)
    assert last.terminal


def test_backoff_doubles_and_is_capped() -> None:
    policy = UpgradePolicy(backoff_s=60, backoff_max_s=200)
    assert [policy.backoff(a).total_seconds() for a in (1, 2, 3, 4)] == [60, 120, 200, 200]


@pytest.mark.parametrize("code", [117, 200, 201, 202, 203, 204, 205, 207])
def test_ota_error_codes_fail_the_attempt(code: int) -> None:
    u = up.on_error_code(upgrading(), code, POLICY, NOW).upgrade
    assert u.state == S.RETRYING
    assert f"OTA error {code}" in (u.reason or "")


@pytest.mark.parametrize("code", [118, 206])
def test_timeout_error_codes_end_as_timed_out(code: int) -> None:
    u = upgrading()
    u = up.on_error_code(u, code, POLICY, NOW).upgrade
    u = up.command(u, POLICY, NOW + timedelta(hours=1)).upgrade
    assert up.on_error_code(u, code, POLICY, NOW).upgrade.state == S.TIMED_OUT


def test_unknown_error_codes_change_nothing() -> None:
    assert not up.on_error_code(upgrading(), 999, POLICY, NOW).changed


def test_our_timeout_fires_at_the_deadline_not_before() -> None:
    u = upgrading()
    assert not up.on_tick(u, POLICY, NOW + timedelta(seconds=599)).changed
    late = up.on_tick(u, POLICY, NOW + timedelta(seconds=600)).upgrade
    assert late.state == S.RETRYING


def test_a_commanded_device_that_never_answers_times_out_too() -> None:
    assert up.on_tick(commanded(), POLICY, NOW + timedelta(seconds=600)).upgrade.state == S.RETRYING


def test_offline_devices_wait_without_using_their_timeout() -> None:
    u = upgrading()
    waiting = up.on_presence(u, False, NOW + timedelta(seconds=100)).upgrade
    assert (waiting.state, waiting.remaining_s, waiting.deadline) == (S.WAITING, 500, None)
    # a day offline uses nothing
    assert not up.on_tick(waiting, POLICY, NOW + timedelta(days=1)).changed
    back = up.on_presence(waiting, True, NOW + timedelta(days=1)).upgrade
    assert back.state == S.UPGRADING
    assert back.deadline == NOW + timedelta(days=1, seconds=500)


def test_a_commanded_device_back_online_is_commanded_until_tuya_says_something() -> None:
    """Offline before any word from Tuya: back online it is still recovery's to reconcile (its command may
    never have arrived), its time resumed; once Tuya spoke, it is upgrading."""
    waiting = up.on_presence(commanded(), False, NOW + timedelta(seconds=100)).upgrade
    back = up.on_presence(waiting, True, NOW + timedelta(days=1))
    assert (back.upgrade.state, back.upgrade.commanded_at) == (S.COMMANDED, NOW)
    assert back.upgrade.deadline == NOW + timedelta(days=1, seconds=500)
    assert back.counter_delta() == {"waiting": -1, "upgrading": 1}
    assert up.same_intent(back.upgrade, commanded())
    heard = up.on_progress(waiting, T.UPGRADING, None, POLICY, NOW + timedelta(seconds=200)).upgrade
    assert heard.state == S.UPGRADING
    sleepy = up.on_progress(commanded(), T.WAITING_FOR_WAKE_UP, None, POLICY, NOW).upgrade
    assert up.on_presence(sleepy, True, NOW).upgrade.state == S.UPGRADING


def test_sleepy_devices_wait_and_complete_when_they_wake() -> None:
    sleepy = up.on_progress(upgrading(), T.WAITING_FOR_WAKE_UP, None, POLICY, NOW).upgrade
    assert sleepy.state == S.WAITING
    assert not up.on_tick(sleepy, POLICY, NOW + timedelta(days=3)).changed
    woke = up.on_version(sleepy, "1.2.0", POLICY, NOW + timedelta(days=3))
    assert woke.upgrade.state == S.SUCCEEDED
    assert woke.counter_delta() == {"waiting": -1, "succeeded": 1}


@pytest.mark.parametrize(
    "late",
    [
        lambda u: up.on_progress(u, T.WAITING_FOR_WAKE_UP, 0, POLICY, NOW),  # a poll answered before the wake
        lambda u: up.on_presence(u, False, NOW),  # the device sleeps again after finishing
    ],
    ids=["late-5", "offline-after-done"],
)
def test_news_after_tuya_done_never_parks_the_upgrade_where_nothing_verifies_it(late: Any) -> None:
    # The e2e's stuck sleepy sensors: a progress poll read Tuya's 5 just before the device woke, the wake's
    # pushes (2, then 3) were applied first, then the poll's stale 5 moved the upgrade back to `waiting` with
    # `tuya_done` set. Verification takes only upgrading+done and polling only not-done, so nothing looked
    # at it again. A done upgrade waits for nothing: only its version check remains: a cloud call.
    done = up.on_progress(upgrading(), T.DONE, 100, POLICY, NOW).upgrade
    after = late(done)
    assert not after.changed
    assert (after.upgrade.state, after.upgrade.tuya_done) == (S.UPGRADING, True)
    assert up.on_version(after.upgrade, "1.2.0", POLICY, NOW).upgrade.state == S.SUCCEEDED


def test_progress_after_waiting_resumes_the_remaining_time() -> None:
    waiting = up.on_presence(upgrading(), False, NOW + timedelta(seconds=600 - 30)).upgrade
    back = up.on_progress(waiting, T.UPGRADING, 70, POLICY, NOW + timedelta(hours=2)).upgrade
    assert back.deadline == NOW + timedelta(hours=2, seconds=30)


def test_a_device_already_on_the_target_before_any_command_is_cancelled_not_succeeded() -> None:
    change = up.on_version(fresh(), "1.3.0", POLICY, NOW)
    assert change.upgrade.state == S.CANCELLED
    assert change.counter_delta() == {"pending": -1, "cancelled": 1}


def test_settled_upgrades_ignore_late_and_duplicate_news() -> None:
    done = up.on_version(upgrading(), "1.2.0", POLICY, NOW).upgrade
    for change in (
        up.on_progress(done, T.FAILED, None, POLICY, NOW),
        up.on_version(done, "1.0.0", POLICY, NOW),
        up.on_presence(done, False, NOW),
        up.on_tick(done, POLICY, NOW + timedelta(days=9)),
        up.cancel(done, "stopped"),
    ):
        assert not change.changed


def test_progress_for_an_upgrade_not_commanded_by_us_is_ignored() -> None:
    assert not up.on_progress(fresh(), T.UPGRADING, 5, POLICY, NOW).changed


def test_stop_cancels_pending_and_retrying_but_not_in_flight() -> None:
    assert up.cancel(fresh(), "stopped").upgrade.state == S.CANCELLED
    retrying = up.on_progress(upgrading(), T.FAILED, None, POLICY, NOW).upgrade
    assert up.cancel(retrying, "stopped").upgrade.state == S.CANCELLED
    assert not up.cancel(upgrading(), "stopped").changed


@pytest.mark.parametrize(
    ("status", "expected", "attempt"),
    [
        # nothing under way at Tuya: it never received the command; the attempt is given back
        (T.NO_UPDATE, S.PENDING, 0),
        (T.READY, S.PENDING, 0),
        # under way, done or waiting: the attempt goes on (never sent again)
        (T.UPGRADING, S.UPGRADING, 1),
        (T.DONE, S.UPGRADING, 1),
        (T.WAITING_FOR_WAKE_UP, S.WAITING, 1),
        # Tuya says it failed: a real failure of this attempt
        (T.FAILED, S.RETRYING, 1),
    ],
)
def test_recovery_of_a_commanded_attempt_follows_tuya_and_never_resends_it(
    status: T, expected: S, attempt: int
) -> None:
    change = up.reconcile_commanded(commanded(), status, None, POLICY, NOW)
    assert (change.upgrade.state, change.upgrade.attempt) == (expected, attempt)


def test_an_attempt_tuya_never_received_is_given_back_without_a_failure() -> None:
    """The next command is the same attempt number; the counters move upgrading -> pending (never failed),
    and the last attempt given back is not failed for good."""
    last = up.give_back(up.fail_attempt(commanded(), "x", POLICY, NOW).upgrade, commanded(), NOW)
    assert not last.changed  # not the recorded intent any more: nothing to give back
    retrying = up.fail_attempt(commanded(), "x", POLICY, NOW).upgrade
    second = up.command(replace(retrying, retry_at=NOW), POLICY, NOW + timedelta(seconds=1)).upgrade
    assert second.attempt == POLICY.max_attempts
    back = up.reconcile_commanded(second, T.NO_UPDATE, None, POLICY, NOW + timedelta(minutes=5))
    assert (back.upgrade.state, back.upgrade.attempt) == (S.RETRYING, 1)
    assert back.counter_delta() == {"upgrading": -1, "pending": 1}
    assert back.upgrade.reason == up.NOT_RECEIVED
    again = up.command(back.upgrade, POLICY, NOW + timedelta(minutes=6)).upgrade
    assert (again.state, again.attempt) == (S.COMMANDED, POLICY.max_attempts)


def test_recovery_finding_the_device_on_the_target_counts_a_success_not_a_give_back() -> None:
    """Tuya may show nothing under way once an upgrade it ran is over: the device's version decides."""
    done = up.reconcile_commanded(commanded(), T.NO_UPDATE, None, POLICY, NOW, reported="1.2.0")
    assert done.upgrade.state == S.SUCCEEDED
    old = up.reconcile_commanded(commanded(), T.NO_UPDATE, None, POLICY, NOW, reported="1.1.0")
    assert (old.upgrade.state, old.upgrade.attempt) == (S.PENDING, 0)


def test_a_give_back_applies_only_to_the_same_recorded_intent() -> None:
    """A stale give-back (its attempt was given back and recorded again, same number, later) changes
    nothing: the new intent may have been sent."""
    first = commanded()
    back = up.give_back(first, first, NOW).upgrade
    again = up.command(back, POLICY, NOW + timedelta(seconds=3)).upgrade
    assert again.attempt == first.attempt
    assert not up.give_back(again, first, NOW + timedelta(seconds=4)).changed
    assert again.commanded_at is not None  # stored times keep milliseconds: the same intent read back
    assert up.same_intent(
        replace(again, commanded_at=again.commanded_at + timedelta(microseconds=400)), again
    )


def test_versions_are_compared_numerically() -> None:
    u = DeviceUpgrade("r1", "EU", ReleaseStage.FULL, "d1", "p1", 9, "1.10.0")
    u = up.command(u, POLICY, NOW).upgrade
    assert up.on_version(u, "1.9.9", POLICY, NOW).upgrade.state == S.COMMANDED
    assert up.on_version(u, "1.10", POLICY, NOW).upgrade.state == S.SUCCEEDED


def test_every_state_has_one_bucket_so_buckets_sum_to_targeted() -> None:
    assert {up.bucket(s) for s in S} == set(up.BUCKETS)


def retry_recorded(failed_at: datetime = NOW + timedelta(minutes=1)) -> DeviceUpgrade:
    """Attempt 1 commanded at NOW and failed (Tuya's 4); attempt 2 recorded at NOW + 5 min (after the
    backoff) and, for all the upgrade knows, maybe never sent."""
    retrying = up.on_progress(commanded(), T.FAILED, 40, POLICY, failed_at).upgrade
    assert retrying.state == S.RETRYING
    return up.command(replace(retrying, retry_at=NOW), POLICY, NOW + timedelta(minutes=5)).upgrade


INTENT = NOW + timedelta(minutes=5)
MS = timedelta(milliseconds=1)


@pytest.mark.parametrize(
    ("status", "ended_at", "state", "attempt"),
    [
        # the upgrade Tuya shows ended between the attempt before's command and this intent: not this one's
        (T.FAILED, NOW + timedelta(minutes=1), S.RETRYING, 1),
        (T.TIMED_OUT, NOW + timedelta(minutes=1), S.RETRYING, 1),
        (T.FAILED, NOW + MS, S.RETRYING, 1),  # just after the attempt before was commanded
        (T.FAILED, INTENT - up.CLOCK_SKEW - MS, S.RETRYING, 1),  # just outside Tuya's clock skew
        # at or before the attempt before's command: the time means something else; counted, as before
        (T.FAILED, NOW, S.FAILED, 2),
        (T.FAILED, NOW - timedelta(days=30), S.FAILED, 2),
        # within the skew of the intent, or after it: may be this attempt's own outcome
        (T.FAILED, INTENT - up.CLOCK_SKEW, S.FAILED, 2),
        (T.TIMED_OUT, INTENT + timedelta(seconds=30), S.TIMED_OUT, 2),
        (T.FAILED, None, S.FAILED, 2),  # Tuya gives no time
        # anything but a final failure is news of this attempt, whatever the time says
        (T.UPGRADING, NOW + timedelta(minutes=1), S.UPGRADING, 2),
        (T.DONE, NOW + timedelta(minutes=1), S.UPGRADING, 2),
    ],
)
def test_a_retrys_recovery_does_not_read_the_attempt_befores_final_status_as_its_own(
    status: T, ended_at: datetime | None, state: S, attempt: int
) -> None:
    """The progress API keeps showing the last upgrade's final status (4, 7) with no time: a retry recorded
    and never sent read its predecessor's failure and was failed for it. The firmware API's
    `last_upgrade_time` tells them apart: ended before this intent (by more than Tuya's clock skew) and
    after the attempt before was commanded, it is that attempt's; nothing is under way for this one, which
    is given back (no attempt used, nothing failed)."""
    second = retry_recorded()
    assert (second.attempt, second.previous_commanded_at, second.commanded_at) == (2, NOW, INTENT)
    change = up.reconcile_commanded(
        second, status, None, POLICY, INTENT + timedelta(minutes=3), ended_at=ended_at
    )
    assert (change.upgrade.state, change.upgrade.attempt) == (state, attempt)
    if state == S.RETRYING:
        assert change.upgrade.reason == up.NOT_RECEIVED
        assert change.counter_delta() == {"upgrading": -1, "pending": 1}


def test_a_first_attempt_has_no_attempt_before_to_blame_a_final_status_on() -> None:
    """A 4 Tuya shows for an attempt we never retried (a failure before this release, say) counts for it,
    whatever its time: only an attempt of ours commanded before bounds the window."""
    first = commanded(INTENT)
    assert first.previous_commanded_at is None
    change = up.reconcile_commanded(first, T.FAILED, None, POLICY, INTENT, ended_at=NOW)
    assert change.upgrade.state == S.RETRYING
    assert change.upgrade.reason != up.NOT_RECEIVED


def test_a_retry_given_back_and_recorded_again_keeps_the_attempt_befores_time() -> None:
    second = retry_recorded()
    back = up.give_back(second, second, INTENT).upgrade
    assert (back.commanded_at, back.previous_commanded_at) == (None, NOW)
    again = up.command(back, POLICY, INTENT + timedelta(minutes=1)).upgrade
    assert (again.attempt, again.previous_commanded_at) == (2, NOW)


def test_a_stale_final_status_with_the_device_on_the_target_is_a_success() -> None:
    change = up.reconcile_commanded(
        retry_recorded(),
        T.FAILED,
        None,
        POLICY,
        INTENT,
        reported="1.2.0",
        ended_at=NOW + timedelta(minutes=1),
    )
    assert change.upgrade.state == S.SUCCEEDED
