"""The pairing session state machine: every transition, expiry at the boundary, N-device counting."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet_contracts.pairing import (
    DevicePaired,
    LateActivation,
    PairingFailed,
    PairingMode,
    PairingSessionEnded,
    PairingTokenConsumed,
    PairingTokenExpired,
    PairingTokenIssued,
    PreviousOwnerNotified,
    UnexpectedProductPaired,
    UnexpectedProductPolicy,
)
from fleet_pairing.domain.causes import BATCH_UNBINDING_HINT, FailureCause
from fleet_pairing.domain.session import (
    Activation,
    ActivationFailure,
    BindingMode,
    FactSource,
    InvalidSession,
    OutcomeKind,
    PairingSession,
    Removal,
    SessionAlreadyEnded,
    SessionRequest,
    SessionState,
    TokenRefused,
    Transition,
    cancel,
    close_if_expired,
    ensure_token_usable,
    open_session,
    record_activation,
    record_failure,
    record_removal,
    record_token_result,
)

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
LIFETIME = timedelta(minutes=10)
EXPIRY = T0 + LIFETIME
OWNER = "eu-owner"
PUSH, POLL = FactSource.PUSH, FactSource.POLL


def request(mode: PairingMode = PairingMode.EZ, **kw: object) -> SessionRequest:
    defaults: dict[str, object] = {
        "owner_uid": OWNER,
        "home_id": "h1",
        "mode": mode,
        "time_zone_id": "Europe/Berlin",
    }
    if mode in (PairingMode.BLE, PairingMode.COMBO):
        defaults["device_uuids"] = ("uuid-1",)
    return SessionRequest(**{**defaults, **kw})  # type: ignore[arg-type]


def opened(mode: PairingMode = PairingMode.EZ, **kw: object) -> PairingSession:
    return open_session(
        "s1", request(mode, **kw), region="AY", token="tok1", lifetime=LIFETIME, now=T0
    ).session


def paired(
    device: str, at: datetime = T0 + timedelta(seconds=30), source: FactSource = PUSH, **kw: object
) -> Activation:
    return Activation(device_id=device, at=at, source=source, **kw)  # type: ignore[arg-type]


def failed(code: str, device: str | None = "dx", **kw: object) -> ActivationFailure:
    return ActivationFailure(code=code, at=T0 + timedelta(seconds=20), source=POLL, device_id=device, **kw)  # type: ignore[arg-type]


def kinds(t: Transition) -> list[type]:
    return [type(e) for e in t.events]


# --- opening ----------------------------------------------------------------------------------------------


def test_opening_issues_the_token_with_tuyas_lifetime() -> None:
    t = open_session("s1", request(expected_devices=3), region="AY", token="tok1", lifetime=LIFETIME, now=T0)
    assert t.session.state is SessionState.ACTIVE
    assert t.session.expires_at == EXPIRY
    [issued] = t.events
    assert isinstance(issued, PairingTokenIssued)
    assert (issued.token, issued.max_devices, issued.tuya_region, issued.session_id) == (
        "tok1",
        3,
        "AY",
        "s1",
    )


def test_a_token_already_expired_is_refused() -> None:
    with pytest.raises(InvalidSession, match="expire_time"):
        open_session("s1", request(), region="AY", token="t", lifetime=timedelta(0), now=T0)


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"expected_devices": 0}, "expected_devices"),
        ({"expected_devices": 1001}, "expected_devices"),
        ({"mode": PairingMode.AP, "expected_devices": 2}, "expected_devices"),
        ({"mode": PairingMode.QR, "expected_devices": 2}, "expected_devices"),
        ({"mode": PairingMode.BLE, "device_uuids": ()}, "device_uuids"),
        ({"mode": PairingMode.COMBO, "device_uuids": ("a", "b")}, "device_uuids"),
        ({"mode": PairingMode.EZ, "device_uuids": ("a",)}, "device_uuids"),
        ({"allowed_products": frozenset()}, "allowed_products"),
        ({"unexpected_policy": UnexpectedProductPolicy.REMOVE}, "unexpected_policy"),
    ],
)
def test_bad_requests_are_refused_naming_the_field(kw: dict[str, object], field: str) -> None:
    mode = kw.pop("mode", PairingMode.EZ)
    defaults: dict[str, object] = {"owner_uid": OWNER, "home_id": "h1", "mode": mode, "time_zone_id": "UTC"}
    with pytest.raises(InvalidSession) as info:
        SessionRequest(**{**defaults, **kw})  # type: ignore[arg-type]
    assert info.value.field == field


# --- single-device modes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mode", [PairingMode.EZ, PairingMode.AP, PairingMode.QR, PairingMode.BLE, PairingMode.COMBO]
)
def test_the_first_success_voids_the_token_and_ends_the_session(mode: PairingMode) -> None:
    t = record_activation(opened(mode), paired("d1", product_id="p1", name="Cam"))
    assert kinds(t) == [DevicePaired, PairingTokenConsumed, PairingSessionEnded]
    assert t.session.state is SessionState.SUCCEEDED
    assert t.session.ended_at == T0 + timedelta(seconds=30)
    ended = t.events[-1]
    assert isinstance(ended, PairingSessionEnded)
    assert (ended.paired_devices, ended.failed_devices) == (1, 0)
    # a second device on the same token: Tuya should have refused; we flag it and count nothing
    late = record_activation(t.session, paired("d2", at=T0 + timedelta(seconds=40)))
    assert kinds(late) == [LateActivation]
    assert late.session.count(OutcomeKind.PAIRED) == 1
    assert late.session.outcome("d2") is not None
    assert late.session.state is SessionState.SUCCEEDED
    with pytest.raises(TokenRefused) as info:
        ensure_token_usable(t.session, T0 + timedelta(seconds=31))
    assert info.value.reason == "used_up"
    with pytest.raises(TokenRefused) as info:
        ensure_token_usable(t.session, EXPIRY + timedelta(seconds=1))
    assert info.value.reason == "used_up"  # still: its devices paired, the time is not why


def test_a_failure_does_not_end_the_session_and_a_retry_can_succeed() -> None:
    t = record_failure(opened(), failed("3", device="d1"))
    assert kinds(t) == [PairingFailed]
    assert t.session.state is SessionState.ACTIVE
    event = t.events[0]
    assert isinstance(event, PairingFailed)
    assert (event.tuya_error_code, event.cause) == ("3", FailureCause.WRONG_WIFI_PASSWORD.value)
    ok = record_activation(t.session, paired("d1"))
    assert ok.session.state is SessionState.SUCCEEDED
    assert ok.session.outcome("d1").kind is OutcomeKind.PAIRED  # type: ignore[union-attr]
    assert ok.session.count(OutcomeKind.FAILED) == 0


def test_the_first_failure_code_of_a_device_wins_and_a_paired_device_keeps_its_success() -> None:
    s = record_failure(opened(expected_devices=2), failed("3", device="d1")).session
    again = record_failure(s, failed("106", device="d1"))
    assert not again.changed
    assert again.events == ()
    s = record_activation(s, paired("d2")).session
    assert not record_failure(s, failed("106", device="d2")).changed


def test_nameless_failures_are_told_apart_by_name_and_code() -> None:
    s = record_failure(opened(), failed("3", device=None, name="Plug")).session
    s = record_failure(s, failed("106", device=None, name="Plug")).session
    assert record_failure(s, failed("3", device=None, name="Plug")).changed is False
    assert s.count(OutcomeKind.FAILED) == 2


# --- multi-device EZ --------------------------------------------------------------------------------------


def test_multi_device_ez_counts_to_n_then_consumes_the_token() -> None:
    s = opened(expected_devices=3)
    for n, device in enumerate(["d1", "d2"], start=1):
        t = record_activation(s, paired(device, at=T0 + timedelta(seconds=n)))
        assert kinds(t) == [DevicePaired]
        s = t.session
        assert s.state is SessionState.ACTIVE
        assert s.token_uses == n
    ensure_token_usable(s, T0 + timedelta(seconds=5))
    t = record_activation(s, paired("d3", at=T0 + timedelta(seconds=9)))
    assert kinds(t) == [DevicePaired, PairingTokenConsumed, PairingSessionEnded]
    consumed = t.events[1]
    assert isinstance(consumed, PairingTokenConsumed)
    assert consumed.paired_devices == 3
    assert t.session.state is SessionState.SUCCEEDED
    assert kinds(record_activation(t.session, paired("d4", at=T0 + timedelta(seconds=10)))) == [
        LateActivation
    ]


def test_expiry_with_some_devices_paired_is_a_partial_success() -> None:
    s = record_activation(opened(expected_devices=3), paired("d1")).session
    s = record_failure(s, failed("106", device="d9")).session
    t = close_if_expired(s, EXPIRY)
    assert kinds(t) == [PairingTokenExpired, PairingSessionEnded]
    assert t.session.state is SessionState.PARTIALLY_SUCCEEDED
    assert t.session.ended_at == EXPIRY
    ended = t.events[1]
    assert isinstance(ended, PairingSessionEnded)
    assert (ended.paired_devices, ended.failed_devices, ended.unexpected_devices) == (1, 1, 0)


# --- expiry -----------------------------------------------------------------------------------------------


def test_expiry_at_the_boundary() -> None:
    s = opened()
    just_before = EXPIRY - timedelta(microseconds=1)
    ensure_token_usable(s, just_before)
    with pytest.raises(TokenRefused) as info:
        ensure_token_usable(s, EXPIRY)
    assert info.value.reason == "expired"
    assert "expired" in str(info.value)
    assert not close_if_expired(s, just_before).changed
    assert close_if_expired(s, EXPIRY).session.state is SessionState.EXPIRED
    # an activation timed one microsecond before expiry counts; one at expiry is late
    assert record_activation(s, paired("d1", at=just_before)).session.state is SessionState.SUCCEEDED
    late = record_activation(s, paired("d1", at=EXPIRY))
    assert kinds(late) == [LateActivation]
    assert late.session.state is SessionState.ACTIVE


def test_the_settle_window_delays_closing_but_not_the_tokens_end() -> None:
    settle = timedelta(seconds=15)
    s = opened()
    assert not close_if_expired(s, EXPIRY + settle - timedelta(microseconds=1), settle).changed
    # a push made before expiry, arriving in the settle window, still counts
    s2 = record_activation(s, paired("d1", at=EXPIRY - timedelta(seconds=1)))
    assert s2.session.state is SessionState.SUCCEEDED
    # a poll in the settle window lists only activations Tuya accepted: in time, whenever we learn of them
    s3 = record_activation(s, paired("d1", at=EXPIRY + timedelta(seconds=5), source=POLL))
    assert s3.session.state is SessionState.SUCCEEDED
    closed = close_if_expired(s, EXPIRY + settle, settle)
    assert closed.session.state is SessionState.EXPIRED
    assert closed.session.ended_at == EXPIRY


def test_nothing_happened_is_expired_and_only_failures_is_failed() -> None:
    assert close_if_expired(opened(), EXPIRY).session.state is SessionState.EXPIRED
    s = record_failure(opened(), failed("3")).session
    assert close_if_expired(s, EXPIRY).session.state is SessionState.FAILED


def test_closing_is_idempotent() -> None:
    closed = close_if_expired(opened(), EXPIRY).session
    assert not close_if_expired(closed, EXPIRY + timedelta(hours=1)).changed


# --- cancel -----------------------------------------------------------------------------------------------


def test_cancel_ends_the_session_and_flags_later_activations() -> None:
    s = record_activation(opened(expected_devices=2), paired("d1")).session
    t = cancel(s, T0 + timedelta(minutes=1))
    assert kinds(t) == [PairingSessionEnded]
    assert t.session.state is SessionState.CANCELLED
    assert not cancel(t.session, T0 + timedelta(minutes=2)).changed  # twice: a no-op
    with pytest.raises(TokenRefused) as info:
        ensure_token_usable(t.session, T0 + timedelta(minutes=2))
    assert info.value.reason == "cancelled"
    late = record_activation(t.session, paired("d2", at=T0 + timedelta(minutes=2)))
    assert kinds(late) == [LateActivation]
    flagged = late.events[0]
    assert isinstance(flagged, LateActivation)
    assert flagged.session_state is SessionState.CANCELLED
    # the same late push again: flagged once
    assert not record_activation(late.session, paired("d2", at=T0 + timedelta(minutes=2))).changed
    assert not close_if_expired(t.session, EXPIRY).changed
    assert not record_failure(t.session, failed("3")).changed


def test_a_session_that_ended_otherwise_cannot_be_cancelled() -> None:
    done = record_activation(opened(), paired("d1")).session
    with pytest.raises(SessionAlreadyEnded) as info:
        cancel(done, T0 + timedelta(minutes=1))
    assert info.value.state is SessionState.SUCCEEDED


# --- push and poll agree ----------------------------------------------------------------------------------


def test_a_duplicate_push_changes_nothing() -> None:
    s = opened(expected_devices=2)
    first = record_activation(s, paired("d1"))
    again = record_activation(first.session, paired("d1"))
    assert not again.changed
    assert again.session is first.session


@given(order=st.permutations(["push-d1", "poll-d1", "push-d2", "poll-d2", "poll-f3"]))
def test_push_and_poll_in_any_order_give_the_same_outcomes(order: list[str]) -> None:
    s = opened(expected_devices=3)
    facts = {
        "push-d1": lambda x: record_activation(x, paired("d1", at=T0 + timedelta(seconds=3), product_id="p")),
        "poll-d1": lambda x: record_activation(
            x, paired("d1", at=T0 + timedelta(seconds=9), source=POLL, product_id="p")
        ),
        "push-d2": lambda x: record_activation(x, paired("d2", at=T0 + timedelta(seconds=4))),
        "poll-d2": lambda x: record_activation(x, paired("d2", at=T0 + timedelta(seconds=8), source=POLL)),
        "poll-f3": lambda x: record_failure(x, failed("106", device="d3")),
    }
    events: list[object] = []
    for name in order:
        t = facts[name](s)
        s, events = t.session, [*events, *t.events]
    assert {o.key: o.kind for o in s.outcomes} == {
        "d1": OutcomeKind.PAIRED,
        "d2": OutcomeKind.PAIRED,
        "d3": OutcomeKind.FAILED,
    }
    assert sorted(type(e).__name__ for e in events) == ["DevicePaired", "DevicePaired", "PairingFailed"]
    assert close_if_expired(s, EXPIRY).session.state is SessionState.PARTIALLY_SUCCEEDED


def test_one_poll_applies_successes_and_failures_together() -> None:
    t = record_token_result(
        opened(expected_devices=3),
        [paired("d1", source=POLL), paired("d2", source=POLL)],
        [failed("3", device="d3")],
    )
    assert kinds(t) == [DevicePaired, DevicePaired, PairingFailed]
    assert not record_token_result(t.session, [paired("d1", source=POLL)], [failed("3", device="d3")]).changed


# --- binding modes ----------------------------------------------------------------------------------------


def test_strong_binding_failure_points_to_batch_unbinding() -> None:
    for mode in (BindingMode.STRONG, None):
        t = record_failure(opened(), failed("113", binding_mode=mode))
        event = t.events[0]
        assert isinstance(event, PairingFailed)
        assert event.cause == FailureCause.BOUND_TO_ANOTHER_ACCOUNT.value
        assert event.hint == BATCH_UNBINDING_HINT
        outcome = t.session.outcome("dx")
        assert outcome is not None
        assert outcome.failure is not None
        assert outcome.failure.description == "bound to another account"
    weak = record_failure(opened(), failed("113", binding_mode=BindingMode.WEAK)).events[0]
    assert isinstance(weak, PairingFailed)
    assert weak.cause == FailureCause.ALREADY_BOUND.value


def test_medium_rebind_succeeds_and_notifies_the_previous_owner() -> None:
    t = record_activation(
        opened(), paired("d1", previous_owner_uid="someone", binding_mode=BindingMode.MEDIUM)
    )
    assert kinds(t) == [DevicePaired, PreviousOwnerNotified, PairingTokenConsumed, PairingSessionEnded]
    notified = t.events[1]
    assert isinstance(notified, PreviousOwnerNotified)
    assert (notified.previous_owner_uid, notified.owner_uid) == ("someone", OWNER)


def test_a_push_names_the_previous_owner_of_a_rebind_the_poll_saw_first() -> None:
    medium = {"previous_owner_uid": "someone", "binding_mode": BindingMode.MEDIUM}
    polled = record_activation(opened(), paired("d1", source=POLL, binding_mode=BindingMode.MEDIUM))
    assert polled.session.state is SessionState.SUCCEEDED  # the session ended on the poll
    pushed = record_activation(polled.session, paired("d1", **medium))
    assert kinds(pushed) == [PreviousOwnerNotified]
    outcome = pushed.session.outcome("d1")
    assert outcome is not None
    assert (outcome.previous_owner_uid, outcome.source) == ("someone", POLL)
    assert not record_activation(pushed.session, paired("d1", **medium)).changed  # once
    weak = record_activation(
        polled.session, paired("d1", previous_owner_uid="someone", binding_mode=BindingMode.WEAK)
    )
    assert weak.changed
    assert weak.events == ()  # weak: known, silent
    assert not record_activation(polled.session, paired("d1", previous_owner_uid=OWNER)).changed


def test_weak_rebind_is_silent_and_a_rebind_to_the_same_owner_is_no_rebind() -> None:
    weak = record_activation(
        opened(), paired("d1", previous_owner_uid="someone", binding_mode=BindingMode.WEAK)
    )
    assert kinds(weak) == [DevicePaired, PairingTokenConsumed, PairingSessionEnded]
    first = weak.events[0]
    assert isinstance(first, DevicePaired)
    assert first.previous_owner_uid == "someone"
    same = record_activation(
        opened(), paired("d1", previous_owner_uid=OWNER, binding_mode=BindingMode.MEDIUM)
    )
    assert PreviousOwnerNotified not in kinds(same)
    event = same.events[0]
    assert isinstance(event, DevicePaired)
    assert event.previous_owner_uid is None


# --- product allow-list -----------------------------------------------------------------------------------


def test_an_unexpected_product_is_recorded_and_does_not_count_toward_n() -> None:
    s = opened(expected_devices=2, allowed_products=frozenset({"p-ok"}))
    t = record_activation(s, paired("d1", product_id="p-other"))
    assert kinds(t) == [UnexpectedProductPaired]
    event = t.events[0]
    assert isinstance(event, UnexpectedProductPaired)
    assert event.policy is UnexpectedProductPolicy.RECORD_ONLY
    assert t.session.outcome("d1").removal is None  # type: ignore[union-attr]
    s = record_activation(t.session, paired("d2", product_id="p-ok")).session
    assert s.state is SessionState.ACTIVE
    assert s.token_uses == 1
    s = record_activation(s, paired("d3", product_id="p-ok")).session
    assert s.state is SessionState.SUCCEEDED


def test_a_device_of_unknown_product_cannot_be_shown_allowed() -> None:
    s = opened(allowed_products=frozenset({"p-ok"}))
    assert kinds(record_activation(s, paired("d1")))[0] is UnexpectedProductPaired


def test_in_single_device_mode_an_unexpected_product_uses_the_token_up_and_the_session_fails() -> None:
    s = opened(
        PairingMode.QR,
        allowed_products=frozenset({"p-ok"}),
        unexpected_policy=UnexpectedProductPolicy.REMOVE,
    )
    t = record_activation(s, paired("d1", product_id="p-other"))
    assert kinds(t) == [UnexpectedProductPaired, PairingTokenConsumed, PairingSessionEnded]
    assert t.session.state is SessionState.FAILED
    assert [o.key for o in t.session.pending_removals()] == ["d1"]
    removed = record_removal(t.session, "d1", removed=True)
    assert removed.changed
    assert removed.events == ()
    assert removed.session.outcome("d1").removal is Removal.DONE  # type: ignore[union-attr]
    assert not record_removal(removed.session, "d1", removed=False).changed
    assert record_removal(t.session, "d1", removed=False).session.outcome("d1").removal is Removal.FAILED  # type: ignore[union-attr]
    assert not record_removal(t.session, "nope", removed=True).changed


def test_late_activation_after_expiry_is_flagged_once() -> None:
    s = close_if_expired(opened(), EXPIRY).session
    t = record_activation(s, paired("d1", at=EXPIRY + timedelta(seconds=1)))
    assert kinds(t) == [LateActivation]
    assert t.session.state is SessionState.EXPIRED
    assert not record_activation(
        t.session, paired("d1", at=EXPIRY + timedelta(seconds=2), source=POLL)
    ).changed


def test_version_is_not_the_domains_business() -> None:
    s = replace(opened(), version=7)
    assert record_activation(s, paired("d1")).session.version == 7
