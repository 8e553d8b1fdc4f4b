"""Batches: approval above the threshold, cancel, QR admission, finishing, idempotency, dry run."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from fleet_contracts.unbinding import RefusalCause, RequestUnbindBatch, UnbindBatchFinished, UnbindMode
from fleet_unbinding.domain import authorization as authz
from fleet_unbinding.domain import batch as batches
from fleet_unbinding.domain.batch import BatchError, BatchStatus, Tally
from fleet_unbinding.domain.qr import Admission, open_session
from fleet_unbinding.domain.quota import QuotaScope
from fleet_unbinding.domain.unbind import DeviceFacts

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def request(n: int = 3, mode: UnbindMode = UnbindMode.LIST) -> RequestUnbindBatch:
    return RequestUnbindBatch(
        batch_id="b1", operator_id="op", mode=mode, device_ids=[f"d{i}" for i in range(n)]
    )


def test_the_contract_refuses_malformed_batches() -> None:
    with pytest.raises(ValidationError, match="unique"):
        RequestUnbindBatch(batch_id="b", operator_id="op", mode=UnbindMode.LIST, device_ids=["a", "a"])
    with pytest.raises(ValidationError, match="1000"):
        request(1001)
    with pytest.raises(ValidationError, match="gateway_id"):
        RequestUnbindBatch(batch_id="b", operator_id="op", mode=UnbindMode.WIRED, device_ids=["a"])


def test_a_batch_above_the_threshold_waits_for_a_second_administrator() -> None:
    small, [event] = batches.create(request(3), NOW, approval_threshold=3)
    assert small.status is BatchStatus.RUNNING
    assert event.batch_id == "b1"
    big, _ = batches.create(request(4), NOW, approval_threshold=3)
    assert big.status is BatchStatus.AWAITING_APPROVAL
    with pytest.raises(BatchError, match="other than its operator"):
        batches.approve(big, "op")
    assert batches.approve(big, "admin2").status is BatchStatus.RUNNING
    with pytest.raises(BatchError, match="not awaiting"):
        batches.approve(small, "admin2")


def test_cancel_is_idempotent_and_impossible_once_finished() -> None:
    b, _ = batches.create(request(1), NOW, approval_threshold=10)
    b = replace(b, devices_added=True)
    c = batches.cancel(b, "op")
    assert c.cancel_requested
    assert batches.cancel(c, "other") is c
    done, _ = batches.finish(c, Tally(0, {RefusalCause.CANCELLED: 1}), NOW)
    with pytest.raises(BatchError, match="finished"):
        batches.cancel(done, "op")


def test_finish_counts_results_by_cause() -> None:
    b, _ = batches.create(request(3), NOW, approval_threshold=10)
    assert not b.may_finish(NOW)  # its devices are not stored yet
    b = replace(b, devices_added=True)
    done, [event] = batches.finish(
        b, Tally(1, {RefusalCause.QUOTA_EXCEEDED: 2, RefusalCause.CANCELLED: 0}), NOW
    )
    assert done.status is BatchStatus.FINISHED
    assert isinstance(event, UnbindBatchFinished)
    assert (event.devices_total, event.unbound, event.refused) == (3, 1, 2)
    assert event.refused_by_cause == {RefusalCause.QUOTA_EXCEEDED: 2}
    with pytest.raises(BatchError, match="cannot finish"):
        batches.finish(done, Tally(0, {}), NOW)


def test_a_qr_batch_admits_scans_and_finishes_only_after_expiry_or_cancel() -> None:
    qr = open_session("tok", now=NOW, validity=timedelta(minutes=5), token_expires_at=None)
    b, _ = batches.create(request(0, UnbindMode.QR), NOW, approval_threshold=100, qr=qr)
    b, decision = batches.admit(b, "d1", NOW)
    assert decision is Admission.ADMITTED
    assert b.device_ids == ("d1",)
    assert b.accepts_devices(NOW)
    assert not b.may_finish(NOW)
    assert b.may_finish(NOW + timedelta(minutes=5))
    cancelled = batches.cancel(b, "op")
    assert cancelled.may_finish(NOW)
    assert batches.admit(cancelled, "d2", NOW)[1] is Admission.EXPIRED
    with pytest.raises(BatchError, match="needs its session"):
        batches.create(request(0, UnbindMode.QR), NOW, approval_threshold=100)


def test_idempotency_keys_name_one_batch_per_operator_and_fingerprints_tell_requests_apart() -> None:
    assert batches.batch_id_for("op", "k1") == batches.batch_id_for("op", "k1")
    assert batches.batch_id_for("op", "k1") != batches.batch_id_for("op2", "k1")
    b, _ = batches.create(request(2), NOW, approval_threshold=10)
    assert batches.same_request(b, request(2).model_copy(update={"batch_id": "other"}))
    assert not batches.same_request(b, request(3))


def test_dry_run_spends_the_remaining_quota_in_order_and_explains_refusals() -> None:
    s = authz.ProductAuthorization("p1")
    auth = {"p1": authz.apply(s, authz.register(s, owner="op", original_owner=None, actor="op", at=NOW))}
    facts: dict[str, DeviceFacts | None] = {
        "a": DeviceFacts("a", "p1", "u", 1),
        "b": DeviceFacts("b", "p1", "u", 1),
        "c": DeviceFacts("c", "p1", "u", 1),
        "d": DeviceFacts("d", "p2", "u", 1),
        "e": DeviceFacts("e", "p1", None, 1),
        "f": None,
    }
    remaining = {(QuotaScope.ACCOUNT, "op"): 5, (QuotaScope.PRODUCT, "p1"): 2}
    out = batches.dry_run("op", list(facts), facts, auth, remaining)
    assert [(p.device_id, p.would_unbind, p.cause) for p in out] == [
        ("a", True, None),
        ("b", True, None),
        ("c", False, RefusalCause.QUOTA_EXCEEDED),
        ("d", False, RefusalCause.UNAUTHORIZED),
        ("e", False, RefusalCause.NOT_BOUND),
        ("f", False, RefusalCause.TUYA_ERROR),
    ]
    assert remaining[(QuotaScope.PRODUCT, "p1")] == 2  # the input is not touched
