"""A batch: one operator's request to unbind a list of devices, a QR session's scanners, or a LAN scan.

    AWAITING_APPROVAL --approve (a second administrator)--> RUNNING --every device has a result--> FINISHED
    RUNNING / AWAITING_APPROVAL --cancel--> (cancel_requested) devices not yet done are refused `cancelled`

Rules:
- At most 1,000 devices per batch, no duplicates (the contract validates the request); QR: at most 30.
- Above `approval_threshold` devices a batch waits for approval by an administrator other than its
  operator. Cancelling a batch that waits refuses all its devices.
- Idempotency: a request carrying a key the operator already used returns that batch if it is the same
  request, and is an error if it differs (`fingerprint`).
- A batch finishes when every device has a result and no more can come: list/wired at once; QR when the
  session has expired or the batch was cancelled. The finish event counts results by cause.
- Dry run: what would happen to each device (authorization, binding, quota left), touching nothing.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

import orjson

from fleet_contracts.unbinding import (
    RefusalCause,
    RequestUnbindBatch,
    UnbindBatchFinished,
    UnbindBatchRequested,
    UnbindMode,
)
from fleet_unbinding.domain.authorization import ProductAuthorization
from fleet_unbinding.domain.qr import Admission, QrSession
from fleet_unbinding.domain.quota import QuotaScope
from fleet_unbinding.domain.unbind import DeviceFacts


class BatchStatus(StrEnum):
    AWAITING_APPROVAL = "awaiting_approval"
    RUNNING = "running"
    FINISHED = "finished"


class BatchError(ValueError):
    """A batch command that breaks a rule; nothing changes."""


@dataclass(frozen=True, slots=True)
class Batch:
    batch_id: str
    operator_id: str
    mode: UnbindMode
    device_ids: tuple[str, ...]  # list/wired: as requested; QR: as admitted
    created_at: datetime
    fingerprint: str
    status: BatchStatus = BatchStatus.RUNNING
    product_id: str | None = None
    reset: bool = False
    gateway_id: str | None = None
    reason: str | None = None
    idempotency_key: str | None = None
    approved_by: str | None = None
    cancelled_by: str | None = None
    qr: QrSession | None = None
    finished_at: datetime | None = None
    devices_added: bool = False  # the device documents of a list/wired batch exist (QR adds them on scan)
    version: int = 0

    @property
    def cancel_requested(self) -> bool:
        return self.cancelled_by is not None

    def accepts_devices(self, now: datetime) -> bool:
        """Whether more devices may still join (QR scans)."""
        return (
            self.qr is not None
            and self.status is not BatchStatus.FINISHED
            and not self.cancel_requested
            and not self.qr.is_expired(now)
        )

    def may_finish(self, now: datetime) -> bool:
        if self.status is BatchStatus.FINISHED or not self.devices_added:
            return False
        if self.qr is not None:
            return self.cancel_requested or self.qr.is_expired(now)
        return True


Event = UnbindBatchRequested | UnbindBatchFinished


def fingerprint(request: RequestUnbindBatch) -> str:
    """Identity of a request's content (without its batch id), to recognise an idempotent retry."""
    body = request.model_dump(mode="json", exclude={"batch_id"})
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def batch_id_for(operator_id: str, idempotency_key: str) -> str:
    """A stable batch id for an idempotency key: the same key of the same operator names the same batch."""
    digest = hashlib.sha256(f"{operator_id}\n{idempotency_key}".encode()).hexdigest()
    return f"b-{digest[:32]}"


def create(
    request: RequestUnbindBatch,
    now: datetime,
    *,
    approval_threshold: int,
    qr: QrSession | None = None,
    idempotency_key: str | None = None,
) -> tuple[Batch, list[Event]]:
    if (request.mode is UnbindMode.QR) != (qr is not None):
        raise BatchError("a QR batch needs its session, and only a QR batch has one")
    expected = len(request.device_ids) if request.mode is not UnbindMode.QR else (qr.capacity if qr else 0)
    status = BatchStatus.AWAITING_APPROVAL if expected > approval_threshold else BatchStatus.RUNNING
    batch = Batch(
        batch_id=request.batch_id,
        operator_id=request.operator_id,
        mode=request.mode,
        device_ids=tuple(request.device_ids) if request.mode is not UnbindMode.QR else (),
        created_at=now,
        fingerprint=fingerprint(request),
        status=status,
        product_id=request.product_id,
        reset=request.reset,
        gateway_id=request.gateway_id,
        reason=request.reason,
        idempotency_key=idempotency_key,
        qr=qr,
        devices_added=request.mode is UnbindMode.QR,
    )
    event = UnbindBatchRequested(**request.model_dump())
    return batch, [event]


def same_request(batch: Batch, request: RequestUnbindBatch) -> bool:
    return batch.fingerprint == fingerprint(request)


def approve(batch: Batch, approver: str) -> Batch:
    if batch.status is not BatchStatus.AWAITING_APPROVAL:
        raise BatchError(f"batch {batch.batch_id} is {batch.status}, not awaiting approval")
    if approver == batch.operator_id:
        raise BatchError("a batch is approved by an administrator other than its operator")
    if batch.cancel_requested:
        raise BatchError("the batch was cancelled")
    return replace(batch, status=BatchStatus.RUNNING, approved_by=approver)


def cancel(batch: Batch, by: str) -> Batch:
    if batch.status is BatchStatus.FINISHED:
        raise BatchError(f"batch {batch.batch_id} has finished")
    if batch.cancel_requested:
        return batch
    return replace(batch, cancelled_by=by)


def admit(batch: Batch, device_id: str, now: datetime) -> tuple[Batch, Admission]:
    """A device scanned the batch's QR: the batch with it admitted, and the decision."""
    if batch.qr is None:
        raise BatchError("only QR batches admit scanning devices")
    if batch.cancel_requested and device_id not in batch.qr.admitted:
        return batch, Admission.EXPIRED
    qr, decision = batch.qr.admit(device_id, now)
    if decision is Admission.ADMITTED:
        return replace(batch, qr=qr, device_ids=(*batch.device_ids, device_id)), decision
    return batch, decision


@dataclass(frozen=True, slots=True)
class Tally:
    """The results of a batch's devices (read from the store)."""

    unbound: int
    refused_by_cause: Mapping[RefusalCause, int]

    @property
    def refused(self) -> int:
        return sum(self.refused_by_cause.values())


def finish(batch: Batch, tally: Tally, now: datetime) -> tuple[Batch, list[Event]]:
    """Close a batch whose devices all have a result (the caller counted none still open)."""
    if not batch.may_finish(now):
        raise BatchError(f"batch {batch.batch_id} cannot finish yet")
    done = replace(batch, status=BatchStatus.FINISHED, finished_at=now)
    total = tally.unbound + tally.refused
    event = UnbindBatchFinished(
        batch_id=batch.batch_id,
        operator_id=batch.operator_id,
        devices_total=total,
        unbound=tally.unbound,
        refused=tally.refused,
        refused_by_cause={c: n for c, n in tally.refused_by_cause.items() if n},
    )
    return done, [event]


# --- dry run ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Prediction:
    device_id: str
    product_id: str | None
    would_unbind: bool
    cause: RefusalCause | None = None


def dry_run(
    operator_id: str,
    device_ids: Sequence[str],
    facts: Mapping[str, DeviceFacts | None],
    auth: Mapping[str, ProductAuthorization],
    remaining: Mapping[tuple[QuotaScope, str], int],
) -> list[Prediction]:
    """What a batch would do now, in order, spending the remaining quota as it goes (nothing is written)."""
    left = Counter(remaining)
    out: list[Prediction] = []
    for device_id in device_ids:
        f = facts.get(device_id)
        if f is None:
            out.append(Prediction(device_id, None, False, RefusalCause.TUYA_ERROR))
            continue
        product_auth = auth.get(f.product_id or "")
        if product_auth is None or not product_auth.may_unbind(operator_id):
            out.append(Prediction(device_id, f.product_id, False, RefusalCause.UNAUTHORIZED))
            continue
        if f.owner_uid is None:
            out.append(Prediction(device_id, f.product_id, False, RefusalCause.NOT_BOUND))
            continue
        keys = ((QuotaScope.ACCOUNT, operator_id), (QuotaScope.PRODUCT, f.product_id or ""))
        if any(left[k] <= 0 for k in keys):
            out.append(Prediction(device_id, f.product_id, False, RefusalCause.QUOTA_EXCEEDED))
            continue
        for k in keys:
            left[k] -= 1
        out.append(Prediction(device_id, f.product_id, True))
    return out
