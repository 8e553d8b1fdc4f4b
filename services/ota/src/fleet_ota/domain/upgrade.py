"""One device's upgrade within a release: a persisted state machine, one document per device and release.

Rules:
- pending -> commanded: the attempt number is raised and recorded *before* Tuya is called
  (`POST /v2.0/cloud/thing/{id}/firmware/{channel}`), so an attempt is never commanded twice: after a crash a
  commanded attempt is reconciled from Tuya's progress API (`reconcile_commanded`): an attempt Tuya never
  received is given back (sent later under the same number, once), one it received is never sent again.
- commanded/upgrading: progress from pushes (`upgradeStatus`, `deviceOtaProgress`) and polling. Tuya's "done"
  (3) is not success: the upgrade succeeds only when the device reports a version at least the target. A
  device that reports an older version after "done" has failed the attempt.
- Tuya's 4 (failed), 7 (timed out), an OTA error code (117, 118, 200-207), a refused command, or our own
  per-attempt timeout fail the attempt. A failed attempt is retried after an exponential backoff while
  attempts remain, then the upgrade fails for good (`timed_out` when the last failure was a timeout, else
  `failed`).
- Offline devices and sleepy ones (Tuya 5, waiting for wake-up) wait without using their timeout: the time
  left is kept and given back when the device is heard from again (as `commanded` while Tuya has said
  nothing of the attempt: recovery still has to learn whether its command arrived). An upgrade Tuya called
  done waits for nothing (only the version check is left, a cloud call): a 5 after done is stale news (a
  poll answered before the wake, a redelivered push) and an offline device after done stays upgrading.
- A device already on the target version before it was commanded is cancelled, not counted as a success.
- Stopping a release cancels devices not in flight; an upgrade in flight cannot be recalled and finishes.
- Every change bumps `version` (the document's optimistic-concurrency version) and returns its event plus the
  progress counter delta, both stored in the same document write.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from fleet_contracts.device import OtaUpgradeStatus
from fleet_contracts.ota import DeviceUpgradeState, DeviceUpgradeStateChanged, ReleaseStage
from fleet_ota.domain.firmware import at_least

S = DeviceUpgradeState

# Tuya's OTA error codes (Bluetooth device guide): every one fails the attempt.
OTA_ERROR_CODES: dict[int, str] = {
    117: "the OTA update failed",
    118: "the OTA update timed out",
    200: "the device failed to respond to the OTA command",
    201: "the device failed to verify the OTA file",
    202: "OTA update offset exception",
    203: "the device failed to acknowledge an OTA packet",
    204: "failed to send the OTA firmware",
    205: "the device reported an OTA failure",
    206: "the OTA update timed out",
    207: "failed to transfer big data",
}
_TIMEOUT_CODES = frozenset({118, 206})

TERMINAL = frozenset({S.SUCCEEDED, S.FAILED, S.TIMED_OUT, S.CANCELLED})
IN_FLIGHT = frozenset({S.COMMANDED, S.UPGRADING, S.WAITING})

# progress counters: every state falls in exactly one bucket, so the buckets always sum to `targeted`
BUCKETS = ("pending", "upgrading", "waiting", "succeeded", "failed", "cancelled")
_BUCKET = {
    S.PENDING: "pending",
    S.RETRYING: "pending",
    S.COMMANDED: "upgrading",
    S.UPGRADING: "upgrading",
    S.WAITING: "waiting",
    S.SUCCEEDED: "succeeded",
    S.FAILED: "failed",
    S.TIMED_OUT: "failed",
    S.CANCELLED: "cancelled",
}


def bucket(state: DeviceUpgradeState) -> str:
    return _BUCKET[state]


@dataclass(frozen=True, slots=True)
class UpgradePolicy:
    max_attempts: int = 3
    backoff_s: float = 300.0
    backoff_max_s: float = 3600.0
    attempt_timeout_s: float = 1800.0

    def backoff(self, attempt: int) -> timedelta:
        """Delay before the attempt after `attempt` (1-based): backoff, doubling, capped."""
        return timedelta(seconds=min(self.backoff_s * 2 ** (attempt - 1), self.backoff_max_s))


@dataclass(frozen=True, slots=True)
class DeviceUpgrade:
    release_id: str
    region: str
    stage: ReleaseStage
    device_id: str
    product_id: str
    channel: int
    target_version: str
    state: DeviceUpgradeState = S.PENDING
    attempt: int = 0
    version: int = 0
    deadline: datetime | None = None  # our timeout of the attempt in flight, while the device is heard
    remaining_s: float | None = None  # time left of that timeout while the device waits (offline/sleepy)
    retry_at: datetime | None = None
    commanded_at: datetime | None = None
    # when the attempt before this one was commanded (None: this is the first Tuya received from us): a
    # final status Tuya shows that ended between it and this attempt's intent is that attempt's
    previous_commanded_at: datetime | None = None
    progress_percent: int | None = None
    tuya_status: OtaUpgradeStatus | None = None
    tuya_done: bool = False
    reported_version: str | None = None
    reason: str | None = None

    @property
    def upgrade_id(self) -> str:
        return upgrade_id(self.release_id, self.device_id)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL


def upgrade_id(release_id: str, device_id: str) -> str:
    return f"{release_id}:{device_id}"


@dataclass(frozen=True, slots=True)
class Change:
    """A transition's result: the new upgrade and the event it causes (None when nothing changed)."""

    upgrade: DeviceUpgrade
    event: DeviceUpgradeStateChanged | None = None

    @property
    def changed(self) -> bool:
        return self.event is not None

    def counter_delta(self) -> dict[str, int]:
        """What the transition does to its stage's progress counters (empty when the bucket is unchanged)."""
        if self.event is None or self.event.previous_state is None:
            return {}
        old, new = bucket(self.event.previous_state), bucket(self.event.state)
        return {} if old == new else {old: -1, new: 1}


def _to(u: DeviceUpgrade, state: DeviceUpgradeState, *, reason: str | None = None, **fields: Any) -> Change:
    new = replace(u, state=state, version=u.version + 1, reason=reason, **fields)
    event = DeviceUpgradeStateChanged(
        release_id=u.release_id,
        tuya_region=u.region,
        device_id=u.device_id,
        channel=u.channel,
        previous_state=u.state,
        state=state,
        stage=u.stage,
        attempt=max(new.attempt, 1),
        progress_percent=new.progress_percent,
        tuya_upgrade_status=new.tuya_status,
        reported_version=new.reported_version,
        reason=reason,
    )
    return Change(new, event)


def _same(u: DeviceUpgrade) -> Change:
    return Change(u)


def ready_to_command(u: DeviceUpgrade, now: datetime) -> bool:
    return u.state == S.PENDING or (u.state == S.RETRYING and u.retry_at is not None and u.retry_at <= now)


def command(u: DeviceUpgrade, policy: UpgradePolicy, now: datetime) -> Change:
    """Record the intent of a new attempt; only then may Tuya be called (never twice per attempt)."""
    if not ready_to_command(u, now):
        return _same(u)
    return _to(
        u,
        S.COMMANDED,
        attempt=u.attempt + 1,
        commanded_at=now,
        # a given-back attempt recorded again keeps what it knew (its own time was cleared)
        previous_commanded_at=u.commanded_at or u.previous_commanded_at,
        deadline=now + timedelta(seconds=policy.attempt_timeout_s),
        remaining_s=None,
        retry_at=None,
        progress_percent=None,
        tuya_status=None,
        tuya_done=False,
    )


def fail_attempt(
    u: DeviceUpgrade, reason: str, policy: UpgradePolicy, now: datetime, *, timed_out: bool = False
) -> Change:
    """The attempt in flight failed: retry after a backoff while attempts remain, else fail for good."""
    if u.state not in IN_FLIGHT:
        return _same(u)
    cleared = {"deadline": None, "remaining_s": None}
    if u.attempt < policy.max_attempts:
        return _to(u, S.RETRYING, reason=reason, retry_at=now + policy.backoff(u.attempt), **cleared)
    return _to(u, S.TIMED_OUT if timed_out else S.FAILED, reason=reason, **cleared)


def same_intent(u: DeviceUpgrade, intent: DeviceUpgrade) -> bool:
    """Whether `u` still holds `intent`'s recorded attempt, not yet heard of (a given-back attempt recorded
    again carries the same number, but a later time; stored times keep milliseconds only)."""
    if u.state != S.COMMANDED or u.attempt != intent.attempt:
        return False
    if u.commanded_at is None or intent.commanded_at is None:
        return u.commanded_at == intent.commanded_at
    return abs(u.commanded_at - intent.commanded_at) < timedelta(milliseconds=1)


NOT_SENT = "Tuya's rate limit: command not sent"
NOT_RECEIVED = "Tuya never received the command: given back"


def give_back(u: DeviceUpgrade, intent: DeviceUpgrade, now: datetime, reason: str = NOT_SENT) -> Change:
    """A recorded attempt Tuya never acted on (its rate limit refused it, it was never sent, or recovery found
    nothing under way at Tuya after the grace period) is given back: the device waits its turn again and the
    next command is this same attempt number, sent once. No attempt is used and nothing fails, so neither
    the attempts left nor the halting counters change."""
    if not same_intent(u, intent):
        return _same(u)  # news about this attempt arrived meanwhile (or it was already given back): it wins
    attempt = intent.attempt
    back = S.PENDING if attempt == 1 else S.RETRYING
    return _to(
        u,
        back,
        reason=reason,
        attempt=attempt - 1,
        commanded_at=None,
        deadline=None,
        retry_at=None if back == S.PENDING else now,
    )


def on_progress(
    u: DeviceUpgrade,
    status: OtaUpgradeStatus,
    progress_percent: int | None,
    policy: UpgradePolicy,
    now: datetime,
) -> Change:
    """A push or a poll says how Tuya sees the upgrade of this channel."""
    if u.state not in IN_FLIGHT:
        return _same(u)  # not commanded by us, or already settled: late and duplicate news change nothing
    percent = progress_percent if progress_percent is not None else u.progress_percent
    match status:
        case OtaUpgradeStatus.FAILED:
            return fail_attempt(u, "Tuya reported the upgrade failed (4)", policy, now)
        case OtaUpgradeStatus.TIMED_OUT:
            return fail_attempt(u, "Tuya reported the upgrade timed out (7)", policy, now, timed_out=True)
        case OtaUpgradeStatus.WAITING_FOR_WAKE_UP:
            if u.tuya_done:
                return _same(u)  # stale (a poll answered before the wake, a redelivered push): it is done
            return _wait(u, "waiting for the device to wake up", now, tuya_status=status)
        case OtaUpgradeStatus.UPGRADING | OtaUpgradeStatus.DONE:
            done = u.tuya_done or status == OtaUpgradeStatus.DONE
            if u.state == S.UPGRADING:
                # progress within the state: stored, but neither an event nor a counter change
                return Change(replace(u, progress_percent=percent, tuya_status=status, tuya_done=done))
            return _to(
                u,
                S.UPGRADING,
                progress_percent=percent,
                tuya_status=status,
                tuya_done=done,
                **_resumed(u, now),
            )
        case _:
            return _same(u)  # 0 / 1: Tuya has nothing in progress to say


def on_error_code(u: DeviceUpgrade, code: int, policy: UpgradePolicy, now: datetime) -> Change:
    text = OTA_ERROR_CODES.get(code)
    if text is None:
        return _same(u)
    return fail_attempt(u, f"OTA error {code}: {text}", policy, now, timed_out=code in _TIMEOUT_CODES)


def on_presence(u: DeviceUpgrade, online: bool, now: datetime) -> Change:
    """Offline devices wait without using their timeout; a device heard again resumes it: `upgrading` once
    Tuya said something of the attempt, else `commanded` again (recovery's to reconcile: its command may never
    have reached Tuya; called `upgrading`, nothing would give it back and it would time out unsent)."""
    if online:
        if u.state != S.WAITING:
            return _same(u)
        heard = u.tuya_status is not None or u.tuya_done or u.progress_percent is not None
        return _to(u, S.UPGRADING if heard else S.COMMANDED, **_resumed(u, now))
    if u.state in (S.COMMANDED, S.UPGRADING) and not u.tuya_done:
        return _wait(u, "device offline", now)
    return _same(u)


def on_version(u: DeviceUpgrade, reported: str, policy: UpgradePolicy, now: datetime) -> Change:
    """The device reported the version its channel runs: the only proof of success."""
    if u.terminal:
        return _same(u)
    if at_least(reported, u.target_version):
        if u.state in (S.PENDING, S.RETRYING) and u.attempt == 0:
            return _to(u, S.CANCELLED, reason="already on the target version", reported_version=reported)
        return _to(u, S.SUCCEEDED, reported_version=reported, deadline=None, remaining_s=None, retry_at=None)
    if u.tuya_done and u.state in IN_FLIGHT:
        changed = replace(u, reported_version=reported)
        return fail_attempt(changed, f"Tuya reported done but the device still runs {reported}", policy, now)
    return Change(replace(u, reported_version=reported)) if reported != u.reported_version else _same(u)


def on_tick(u: DeviceUpgrade, policy: UpgradePolicy, now: datetime) -> Change:
    """Our own per-attempt timeout, counted only while the device is heard from."""
    if u.state in (S.COMMANDED, S.UPGRADING) and u.deadline is not None and now >= u.deadline:
        return fail_attempt(u, "no new version before the attempt timed out", policy, now, timed_out=True)
    return _same(u)


# Tuya's clock may run behind ours by up to this much: a final status that ended less than this before an
# intent may be the intent's own command's outcome
CLOCK_SKEW = timedelta(seconds=60)
FINAL_FAILURES = frozenset({OtaUpgradeStatus.FAILED, OtaUpgradeStatus.TIMED_OUT})


def previous_outcome(u: DeviceUpgrade, ended_at: datetime | None) -> bool:
    """Whether a final status Tuya shows (4 or 7), its upgrade ended at `ended_at` (the firmware API's
    `last_upgrade_time`), is the previous attempt's, not this one's: the progress API has no time, and keeps
    showing the last upgrade's final status until the next one starts.

    Only when it ended after the previous attempt was commanded and well before this attempt's intent (by
    `CLOCK_SKEW`): a command of this attempt cannot have ended before it was recorded, so the status says
    nothing about it. Anything else (no time, no previous attempt of ours, a time outside that window: the
    field meaning something else) counts for this attempt, as before: never a command sent twice."""
    if ended_at is None or u.commanded_at is None or u.previous_commanded_at is None:
        return False
    return u.previous_commanded_at < ended_at < u.commanded_at - CLOCK_SKEW


def reconcile_commanded(
    u: DeviceUpgrade,
    status: OtaUpgradeStatus,
    progress: int | None,
    policy: UpgradePolicy,
    now: datetime,
    *,
    reported: str | None = None,
    ended_at: datetime | None = None,
) -> Change:
    """A commanded attempt with no news for the grace period (a crash, a database outage, a lost answer): its
    command may or may not have reached Tuya. The caller waits until no command of it can still reach Tuya
    or be on its way into Tuya's progress API (`handlers.recover_commanded`), then asks Tuya.

    An upgrade under way (or done, or waiting) continues. Nothing under way (0 or 1) means Tuya never acted on
    the command: the attempt is given back (`give_back`), unless the device already runs the target
    (`reported`, from the firmware API: an upgrade Tuya finished and forgot), which is a success. A failure
    Tuya reports (4, 7) fails the attempt as a push would, unless it is the previous attempt's outcome
    (`previous_outcome`, from `ended_at`): then nothing is under way for this one either (a retry's intent
    recorded and never sent read the attempt before's failure and was failed for it, unsent).
    """
    if u.state != S.COMMANDED:
        return _same(u)
    stale = status in FINAL_FAILURES and previous_outcome(u, ended_at)
    if stale or status in (OtaUpgradeStatus.NO_UPDATE, OtaUpgradeStatus.READY):
        if reported is not None and at_least(reported, u.target_version):
            return on_version(u, reported, policy, now)
        return give_back(u, u, now, NOT_RECEIVED)
    return on_progress(u, status, progress, policy, now)


def cancel(u: DeviceUpgrade, reason: str) -> Change:
    """Stop a device that has not started (in-flight upgrades cannot be recalled and finish)."""
    if u.state in (S.PENDING, S.RETRYING):
        return _to(u, S.CANCELLED, reason=reason, retry_at=None)
    return _same(u)


def _wait(u: DeviceUpgrade, reason: str, now: datetime, **fields: Any) -> Change:
    if u.state == S.WAITING:
        return _same(u)
    left = None if u.deadline is None else max((u.deadline - now).total_seconds(), 0.0)
    return _to(u, S.WAITING, reason=reason, deadline=None, remaining_s=left, **fields)


def _resumed(u: DeviceUpgrade, now: datetime) -> dict[str, Any]:
    if u.state != S.WAITING:
        return {}
    left = u.remaining_s if u.remaining_s is not None else 0.0
    return {"deadline": now + timedelta(seconds=left), "remaining_s": None}
