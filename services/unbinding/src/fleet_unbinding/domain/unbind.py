"""One device's unbind within a batch: a crash-safe state machine.

    PENDING --assess--> REFUSED (unauthorized or not the batch's product, not bound, Tuya error, cancelled)
    PENDING --exhausted--> REFUSED (quota_exceeded)
    PENDING --start_call--> CALLING            (units of both counters' blocks named and the intent recorded,
                                                one write, BEFORE Tuya is called)
    RESERVED --intend--> CALLING               (documents of earlier versions: units reserved one by one)
    CALLING --Tuya said true--> UNBOUND
    CALLING --Tuya refused (offline 2001, other code)--> REFUSED, units refunded
    CALLING --no answer / rate limited--> CALLING, then reconcile against the device's binding
    PENDING, RESERVED --cancel--> REFUSED (cancelled);  CALLING is in flight and cannot be cancelled

Rules:
- Exactly one result per device: UNBOUND or REFUSED are final and never change.
- Never unbound twice: the owner (`uid`) and activation time seen before the call are recorded with the
  intent (a conditional write: one worker holds it). After an unanswered call, or a crash (another worker,
  only once the intent's lease has passed), the device is looked up again: if it no longer exists, has
  another owner, or was activated again, the unbind took effect (UNBOUND, `reconciled`); if the same owner
  and activation still stand, it did not, and calling again is safe. A new owner who paired the device
  meanwhile is never unbound by a retry.
- A device holds its quota units once the write that records its intent names their blocks (the quota
  day and one block per counter): a block's units in use are exactly the devices naming it. A refusal
  after that is written with `units_held` set; the handler refunds (once per unit, idempotent) and clears
  it, and recovery refunds any refusal still flagged. An UNBOUND device's units stay counted.
- Documents of the earlier version (`units_listed`: a quota day, no blocks) hold units listed by name in
  the counters: those are given back only while listed (a reservation a crash hid may never have
  landed), and a PENDING one gives back whatever it may hold before taking units from blocks.
- Each final result carries its event (outbox of the same write) with a deterministic id.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from fleet_contracts.unbinding import BatchDeviceRefused, BatchDeviceUnbound, RefusalCause, UnbindMode
from fleet_unbinding.domain.authorization import ProductAuthorization
from fleet_unbinding.domain.quota import QuotaScope, Reservation

OFFLINE_CODE = "2001"
# Tuya did not run the call (rate limited, busy) or we cannot know (transport): reconcile, never guess
INDEFINITE_CODES = frozenset({"1110", "1111", "1199"})
# refused for Tuya's rate or concurrency limit: the call did not run, so it does not use up the device's
# calls (a loaded moment must not turn into `tuya_error` results), up to this many times the calls allowed
RATE_LIMITED_CODES = frozenset({"1110", "1199"})
RATE_LIMITED_PATIENCE = 5


class UnbindState(StrEnum):
    PENDING = "pending"
    RESERVED = "reserved"
    CALLING = "calling"
    UNBOUND = "unbound"
    REFUSED = "refused"

    @property
    def final(self) -> bool:
        return self in (UnbindState.UNBOUND, UnbindState.REFUSED)


class TransitionError(ValueError):
    """A transition asked of a device in a state that does not allow it (a programming error)."""


@dataclass(frozen=True, slots=True)
class DeviceFacts:
    """What Tuya says about the device now (`GET /v1.0/devices/{id}`)."""

    device_id: str
    product_id: str | None
    owner_uid: str | None  # None: bound to no account
    active_time: int | None  # epoch seconds of the last activation (pairing)
    online: bool | None = None


@dataclass(frozen=True, slots=True)
class DeviceUnbind:
    batch_id: str
    device_id: str
    operator_id: str
    mode: UnbindMode
    reset: bool = False
    batch_product_id: str | None = None  # the batch is for this product only (when the operator named one)
    state: UnbindState = UnbindState.PENDING
    product_id: str | None = None
    owner_uid: str | None = None  # as seen before the call
    active_time: int | None = None
    cause: RefusalCause | None = None
    tuya_error_code: str | None = None
    detail: str | None = None
    quota_day: str | None = None  # the day whose counters hold (or may hold) this device's units
    # the blocks its units came from, one per counter (account, product); empty for earlier documents
    quota_blocks: tuple[str, ...] = ()
    units_held: bool = False
    reconciled: bool = False
    calls: int = 0  # Tuya removal calls made (after intent)
    called_at: datetime | None = None  # when the current intent was recorded
    finished_at: datetime | None = None
    version: int = 0

    @property
    def id(self) -> str:
        return f"{self.batch_id}/{self.device_id}"

    @property
    def units_listed(self) -> bool:
        """Whether its units are (or may be) listed by name in the counters, as an earlier version reserved
        them: one unit per device and counter, the quota day recorded *before* reserving (so a PENDING
        device with a quota day may or may not hold them). This version records a day only together with
        its blocks, so a quota day without blocks can only be an earlier version's."""
        return self.quota_day is not None and not self.quota_blocks


Event = BatchDeviceUnbound | BatchDeviceRefused
Step = tuple[DeviceUnbind, list[Event]]


def result_event_id(batch_id: str, device_id: str) -> str:
    return f"unbinding:{batch_id}:{device_id}:result"


def new(
    batch_id: str,
    device_id: str,
    operator_id: str,
    mode: UnbindMode,
    *,
    reset: bool,
    batch_product_id: str | None = None,
) -> DeviceUnbind:
    return DeviceUnbind(batch_id, device_id, operator_id, mode, reset, batch_product_id)


def _require(unbind: DeviceUnbind, *states: UnbindState) -> None:
    if unbind.state not in states:
        raise TransitionError(f"{unbind.id} is {unbind.state}, expected one of {[str(s) for s in states]}")


def refuse(
    unbind: DeviceUnbind,
    cause: RefusalCause,
    now: datetime,
    *,
    tuya_error_code: str | None = None,
    detail: str | None = None,
) -> Step:
    """The device's final refusal and its event. Units reserved so far stay flagged until refunded."""
    _require(unbind, UnbindState.PENDING, UnbindState.RESERVED, UnbindState.CALLING)
    code = tuya_error_code if cause is RefusalCause.TUYA_ERROR else None
    done = replace(
        unbind,
        state=UnbindState.REFUSED,
        cause=cause,
        tuya_error_code=code,
        detail=detail,
        # units may be held once a reservation was attempted (a crash can hide its outcome)
        units_held=unbind.units_held or unbind.quota_day is not None,
        finished_at=now,
    )
    event = BatchDeviceRefused(
        batch_id=unbind.batch_id,
        device_id=unbind.device_id,
        product_id=unbind.product_id,
        operator_id=unbind.operator_id,
        cause=cause,
        tuya_error_code=code,
        detail=detail,
    )
    return done, [event]


def assess(
    unbind: DeviceUnbind, facts: DeviceFacts | None, auth: ProductAuthorization | None, now: datetime
) -> Step | None:
    """Authorization and binding check before any quota is touched: the refusal, or None to go on.

    `facts` None: Tuya does not know the device (2010); `auth` None: the product is not registered here.
    """
    _require(unbind, UnbindState.PENDING)
    if facts is None:
        return refuse(unbind, RefusalCause.TUYA_ERROR, now, tuya_error_code="2010", detail="device not found")
    unbind = replace(unbind, product_id=facts.product_id)
    if unbind.batch_product_id is not None and facts.product_id != unbind.batch_product_id:
        detail = f"product {facts.product_id} is not the batch's product {unbind.batch_product_id}"
        return refuse(unbind, RefusalCause.UNAUTHORIZED, now, detail=detail)
    if auth is None or not auth.may_unbind(unbind.operator_id):
        return refuse(unbind, RefusalCause.UNAUTHORIZED, now, detail=f"product {facts.product_id}")
    if facts.owner_uid is None:
        return refuse(unbind, RefusalCause.NOT_BOUND, now)
    return None


def quota_refused(unbind: DeviceUnbind, facts: DeviceFacts, outcome: Reservation, now: datetime) -> Step:
    """A counter had no unit left: refused `quota_exceeded`, nothing held."""
    _require(unbind, UnbindState.PENDING)
    if outcome is Reservation.RESERVED:
        raise TransitionError(f"{unbind.id}: a reservation is not a quota refusal")
    unbind = replace(unbind, product_id=facts.product_id, quota_day=None, quota_blocks=())
    scope = QuotaScope.ACCOUNT if outcome is Reservation.ACCOUNT_EXHAUSTED else QuotaScope.PRODUCT
    return refuse(unbind, RefusalCause.QUOTA_EXCEEDED, now, detail=f"daily {scope} quota used up")


def start_call(
    unbind: DeviceUnbind, facts: DeviceFacts, day: str, blocks: tuple[str, ...], now: datetime
) -> DeviceUnbind:
    """Units taken from `blocks` (one per counter of `day`) and the intent to call Tuya, recorded in one
    write (durable before the call): the owner and activation seen now are what reconciliation compares."""
    _require(unbind, UnbindState.PENDING)
    if not blocks:
        raise TransitionError(f"{unbind.id}: a call needs its quota units")
    return replace(
        unbind,
        state=UnbindState.CALLING,
        product_id=facts.product_id,
        owner_uid=facts.owner_uid,
        active_time=facts.active_time,
        quota_day=day,
        quota_blocks=blocks,
        units_held=True,
        calls=unbind.calls + 1,
        called_at=now,
    )


def intend(unbind: DeviceUnbind, now: datetime) -> DeviceUnbind:
    """Record the intent to call Tuya again (must be durable before the call)."""
    _require(unbind, UnbindState.RESERVED, UnbindState.CALLING)
    return replace(unbind, state=UnbindState.CALLING, calls=unbind.calls + 1, called_at=now)


def may_reconcile(unbind: DeviceUnbind, now: datetime, lease: timedelta) -> bool:
    """Whether a worker that did not record the current intent may reconcile it: only once the call the
    intent announced must have ended (its lease is longer than any call), so two workers never call Tuya
    for one device at once."""
    _require(unbind, UnbindState.CALLING)
    return unbind.called_at is None or now >= unbind.called_at + lease


def _unbound(unbind: DeviceUnbind, now: datetime, *, reconciled: bool) -> Step:
    done = replace(unbind, state=UnbindState.UNBOUND, reconciled=reconciled, finished_at=now)
    event = BatchDeviceUnbound(
        batch_id=unbind.batch_id,
        device_id=unbind.device_id,
        product_id=unbind.product_id,
        operator_id=unbind.operator_id,
    )
    return done, [event]


def call_succeeded(unbind: DeviceUnbind, now: datetime) -> Step:
    _require(unbind, UnbindState.CALLING)
    return _unbound(unbind, now, reconciled=False)


def call_failed(unbind: DeviceUnbind, code: str | None, now: datetime) -> Step | None:
    """Tuya answered with an error (`code`; None: no usable answer). The refusal, or None: reconcile."""
    _require(unbind, UnbindState.CALLING)
    if code is None or code in INDEFINITE_CODES:
        return None
    if code == OFFLINE_CODE:
        return refuse(unbind, RefusalCause.DEVICE_OFFLINE, now)
    return refuse(unbind, RefusalCause.TUYA_ERROR, now, tuya_error_code=code)


class Reconciliation(StrEnum):
    TOOK_EFFECT = "took_effect"
    CALL_AGAIN = "call_again"
    GIVE_UP = "give_up"


def reconcile(
    unbind: DeviceUnbind, facts: DeviceFacts | None, *, max_calls: int, last_code: str | None = None
) -> Reconciliation:
    """After an unanswered call or a crash during CALLING: did the unbind take effect? `last_code`: what
    Tuya answered the last call, when this worker made it (a rate-limit refusal allows more calls)."""
    _require(unbind, UnbindState.CALLING)
    if facts is None or facts.owner_uid != unbind.owner_uid or facts.active_time != unbind.active_time:
        return Reconciliation.TOOK_EFFECT
    allowed = max_calls * RATE_LIMITED_PATIENCE if last_code in RATE_LIMITED_CODES else max_calls
    return Reconciliation.CALL_AGAIN if unbind.calls < allowed else Reconciliation.GIVE_UP


def reconciled(
    unbind: DeviceUnbind, decision: Reconciliation, now: datetime, *, last_code: str | None
) -> Step | None:
    """The final step a reconciliation decided, or None when the handler should call Tuya again."""
    match decision:
        case Reconciliation.TOOK_EFFECT:
            return _unbound(unbind, now, reconciled=True)
        case Reconciliation.GIVE_UP:
            return refuse(
                unbind,
                RefusalCause.TUYA_ERROR,
                now,
                tuya_error_code=last_code or "unanswered",
                detail=f"no effect after {unbind.calls} calls",
            )
        case Reconciliation.CALL_AGAIN:
            return None


def cancel(unbind: DeviceUnbind, now: datetime) -> Step | None:
    """Cancel a device not yet done; None when it is final or in flight (it finishes on its own)."""
    if unbind.state in (UnbindState.PENDING, UnbindState.RESERVED):
        return refuse(unbind, RefusalCause.CANCELLED, now)
    return None


def refunded(unbind: DeviceUnbind) -> DeviceUnbind:
    _require(unbind, UnbindState.REFUSED)
    return replace(unbind, units_held=False)
