"""One device's state machine: checks before quota, units and intent in one write before the call,
reconciliation."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from fleet_contracts.unbinding import BatchDeviceRefused, BatchDeviceUnbound, RefusalCause, UnbindMode
from fleet_unbinding.domain import authorization as authz
from fleet_unbinding.domain import unbind
from fleet_unbinding.domain.quota import Reservation
from fleet_unbinding.domain.unbind import DeviceFacts, Reconciliation, TransitionError, UnbindState

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
FACTS = DeviceFacts("d1", "p1", "u1", 1_700_000_000, True)


def owned(owner: str = "op") -> authz.ProductAuthorization:
    s = authz.ProductAuthorization("p1")
    return authz.apply(s, authz.register(s, owner=owner, original_owner=None, actor=owner, at=NOW))


def pending() -> unbind.DeviceUnbind:
    return unbind.new("b1", "d1", "op", UnbindMode.LIST, reset=False)


def calling() -> unbind.DeviceUnbind:
    return unbind.start_call(pending(), FACTS, "2026-11-29", ("ba", "bp"), NOW)


def test_unknown_device_unauthorized_operator_and_unbound_device_are_refused_before_any_quota() -> None:
    u = pending()
    missing = unbind.assess(u, None, owned(), NOW)
    assert missing is not None
    assert (missing[0].cause, missing[0].tuya_error_code) == (RefusalCause.TUYA_ERROR, "2010")
    for auth in (None, owned("someone-else")):
        refused = unbind.assess(u, FACTS, auth, NOW)
        assert refused is not None
        assert refused[0].cause is RefusalCause.UNAUTHORIZED
        assert refused[0].units_held is False
    not_bound = unbind.assess(u, replace(FACTS, owner_uid=None), owned(), NOW)
    assert not_bound is not None
    assert not_bound[0].cause is RefusalCause.NOT_BOUND
    assert unbind.assess(u, FACTS, owned(), NOW) is None


def test_starting_the_call_records_units_owner_and_activation_in_one_step() -> None:
    u = calling()
    assert (u.state, u.owner_uid, u.active_time, u.units_held, u.calls, u.called_at) == (
        UnbindState.CALLING,
        "u1",
        1_700_000_000,
        True,
        1,
        NOW,
    )
    assert (u.quota_day, u.quota_blocks, u.product_id) == ("2026-11-29", ("ba", "bp"), "p1")
    with pytest.raises(TransitionError):
        unbind.start_call(pending(), FACTS, "2026-11-29", (), NOW)  # never without its units
    with pytest.raises(TransitionError):
        unbind.start_call(u, FACTS, "2026-11-29", ("ba", "bp"), NOW)  # once


@pytest.mark.parametrize("outcome", [Reservation.ACCOUNT_EXHAUSTED, Reservation.PRODUCT_EXHAUSTED])
def test_an_exhausted_counter_refuses_quota_exceeded_with_nothing_held(outcome: Reservation) -> None:
    refused, [event] = unbind.quota_refused(pending(), FACTS, outcome, NOW)
    assert refused.cause is RefusalCause.QUOTA_EXCEEDED
    assert (refused.units_held, refused.quota_day, refused.quota_blocks) == (False, None, ())
    assert isinstance(event, BatchDeviceRefused)
    assert outcome.value.split("_")[0] in (refused.detail or "")
    with pytest.raises(TransitionError):
        unbind.quota_refused(pending(), FACTS, Reservation.RESERVED, NOW)


def test_a_refusal_after_the_units_were_taken_flags_them_for_refund() -> None:
    refused, _ = unbind.refuse(calling(), RefusalCause.DEVICE_OFFLINE, NOW)
    assert refused.units_held is True
    assert refused.quota_blocks == ("ba", "bp")  # still counted in its blocks; the refund gives it back
    assert unbind.refunded(refused).units_held is False


def test_success_gives_one_unbound_event_and_a_final_state() -> None:
    done, [event] = unbind.call_succeeded(calling(), NOW)
    assert done.state is UnbindState.UNBOUND
    assert isinstance(event, BatchDeviceUnbound)
    with pytest.raises(TransitionError):
        unbind.intend(done, NOW)
    assert unbind.cancel(done, NOW) is None


@pytest.mark.parametrize(
    ("code", "cause", "tuya_code"),
    [("2001", RefusalCause.DEVICE_OFFLINE, None), ("2010", RefusalCause.TUYA_ERROR, "2010")],
)
def test_a_definitive_tuya_error_refuses(code: str, cause: RefusalCause, tuya_code: str | None) -> None:
    step = unbind.call_failed(calling(), code, NOW)
    assert step is not None
    assert (step[0].cause, step[0].tuya_error_code, step[0].units_held) == (cause, tuya_code, True)


@pytest.mark.parametrize("code", ["1199", "1110", "1111", None])
def test_rate_limits_and_lost_answers_go_to_reconciliation(code: str | None) -> None:
    assert unbind.call_failed(calling(), code, NOW) is None


def test_reconciliation_sees_the_unbind_took_effect_when_owner_or_activation_changed_or_device_is_gone() -> (
    None
):
    u = calling()
    for facts in (
        None,
        replace(FACTS, owner_uid=None),
        replace(FACTS, owner_uid="new"),
        replace(FACTS, active_time=1),
    ):
        assert unbind.reconcile(u, facts, max_calls=3) is Reconciliation.TOOK_EFFECT
    step = unbind.reconciled(u, Reconciliation.TOOK_EFFECT, NOW, last_code=None)
    assert step is not None
    assert step[0].reconciled


def test_reconciliation_calls_again_while_the_same_binding_stands_then_gives_up() -> None:
    u = calling()
    assert unbind.reconcile(u, FACTS, max_calls=3) is Reconciliation.CALL_AGAIN
    u = unbind.intend(unbind.intend(u, NOW), NOW)
    assert u.calls == 3
    assert unbind.reconcile(u, FACTS, max_calls=3) is Reconciliation.GIVE_UP
    step = unbind.reconciled(u, Reconciliation.GIVE_UP, NOW, last_code="1199")
    assert step is not None
    assert (step[0].cause, step[0].tuya_error_code) == (RefusalCause.TUYA_ERROR, "1199")
    assert unbind.reconciled(u, Reconciliation.CALL_AGAIN, NOW, last_code=None) is None


def test_calls_refused_for_the_rate_limit_did_not_run_and_do_not_use_up_the_device() -> None:
    u = unbind.intend(unbind.intend(calling(), NOW), NOW)
    assert u.calls == 3
    for code in ("1199", "1110"):
        assert unbind.reconcile(u, FACTS, max_calls=3, last_code=code) is Reconciliation.CALL_AGAIN
    for code in (None, "1111"):  # unanswered or busy: whether it ran is unknown, the budget counts
        assert unbind.reconcile(u, FACTS, max_calls=3, last_code=code) is Reconciliation.GIVE_UP
    for _ in range(3 * unbind.RATE_LIMITED_PATIENCE - 3):
        u = unbind.intend(u, NOW)
    assert unbind.reconcile(u, FACTS, max_calls=3, last_code="1199") is Reconciliation.GIVE_UP  # not forever


def test_cancel_refuses_pending_and_reserved_but_not_an_inflight_call() -> None:
    step = unbind.cancel(pending(), NOW)
    assert step is not None
    assert step[0].cause is RefusalCause.CANCELLED
    assert unbind.cancel(calling(), NOW) is None


def test_another_worker_reconciles_an_intent_only_after_its_lease() -> None:
    u = calling()
    lease = timedelta(seconds=30)
    assert u.called_at == NOW
    assert not unbind.may_reconcile(u, NOW + lease - timedelta(microseconds=1), lease)
    assert unbind.may_reconcile(u, NOW + lease, lease)


def test_a_batch_for_one_product_refuses_devices_of_another() -> None:
    u = unbind.new("b1", "d1", "op", UnbindMode.QR, reset=True, batch_product_id="p2")
    refused = unbind.assess(u, FACTS, owned(), NOW)
    assert refused is not None
    assert refused[0].cause is RefusalCause.UNAUTHORIZED
    assert "not the batch's product" in (refused[0].detail or "")
