"""The pairing session: one Tuya token for one home, and what became of every device that used it.

Rules (time is always a parameter):
- A session opens `active` with the token Tuya issued; it expires at issue time + Tuya's `expire_time`.
  The token is honoured while `now < expires_at` and the session is active; at `expires_at` it is void.
- Token uses: single-device modes (AP, QR, BLE, combo, and EZ expecting one device) allow one activation; the
  first one voids the token (Tuya's rule). Multi-device EZ allows `expected_devices` paired devices: the token
  is consumed when that many devices of allowed products paired.
- An activation (push `bindUser`/`deviceBindSpace` with the token, or the token result's success list) of a
  device not seen before, at a time the token was honoured:
  - of a product outside the allow-list: recorded as `unexpected_product` (removal pending when the policy is
    `remove`); in single-device modes it uses the token up, in multi-device EZ it does not count toward N;
  - otherwise `paired`; a medium-bound product rebound from another account also causes `previous owner
    notified`; weak rebinds are silent. A device that failed earlier and now paired counts as paired.
    A poll cannot see who the device belonged to: when its push comes after the poll, the push adds the
    previous owner to the outcome (and notifies a medium product's previous owner), once.
- An activation at or after the session's end (cancel time, expiry, or beyond the token's uses) is recorded
  once as `late` and flagged; it never changes the counts or the state. A push is timed by Tuya's push time;
  a poll cannot time an activation, but Tuya lists only activations it accepted before expiry, so a device
  first seen by a poll of a session still active (in its settle window) counts as in time.
- A failure (token result's failed list) is recorded once per device (the first code wins: polls repeat the
  list); a device that already paired keeps its success. Code 113 of a strongly bound (or unknown-mode)
  product is `bound_to_another_account` with a pointer to batch unbinding. Failures do not end the session:
  the device may retry until the token expires. Failures learned after the end change nothing.
- The session ends: `cancelled` by the operator (Tuya's stopConfig); when its token is consumed; or, while
  active, once `now >= expires_at + settle` (the settle window lets pushes and the last poll of activations
  made before expiry arrive). The final state of a non-cancelled session: `succeeded` when the expected
  count paired, `partially_succeeded` when some did, `failed` when none did but a device failed or an
  unexpected product joined, `expired` when nothing happened.
- Every transition returns the new session and the events it causes; a transition that changes nothing
  returns the same session and no events (so redelivered facts are harmless).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum

from fleet_contracts._base import Payload
from fleet_contracts.pairing import (
    DevicePaired,
    LateActivation,
    PairingFailed,
    PairingMode,
    PairingSessionEnded,
    PairingSessionState,
    PairingTokenConsumed,
    PairingTokenExpired,
    PairingTokenIssued,
    PreviousOwnerNotified,
    UnexpectedProductPaired,
    UnexpectedProductPolicy,
)
from fleet_pairing.domain.causes import (
    ALREADY_BOUND_CODE,
    BATCH_UNBINDING_HINT,
    Failure,
    FailureCause,
    failure_for,
)

SessionState = PairingSessionState
_TICK = timedelta(milliseconds=1)
MAX_DEVICE_UUIDS = 1  # Tuya's BLE token carries one `extension.uuid`: one BLE/combo device per session
MAX_EXPECTED_DEVICES = 1000  # the contract's ceiling for a token's devices (`PairingTokenIssued.max_devices`)


class BindingMode(StrEnum):
    """How a product binds to an account (camera-qr-pairing.txt)."""

    STRONG = "strong"  # must be removed from the previous account first
    MEDIUM = "medium"  # rebind allowed, the previous account is notified
    WEAK = "weak"  # rebind allowed silently


class OutcomeKind(StrEnum):
    PAIRED = "paired"
    FAILED = "failed"
    UNEXPECTED_PRODUCT = "unexpected_product"
    LATE = "late"


class Removal(StrEnum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"


class FactSource(StrEnum):
    PUSH = "push"
    POLL = "poll"


class InvalidSession(ValueError):
    """A session request that cannot be served; `field` names the offending field."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class TokenRefused(Exception):
    """The token is no longer honoured. `reason`: `expired`, `used_up` or `cancelled` (a session state)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class SessionAlreadyEnded(Exception):
    def __init__(self, state: SessionState) -> None:
        super().__init__(f"the session already ended as {state.value}")
        self.state = state


@dataclass(frozen=True, slots=True)
class SessionRequest:
    """What the caller asks for. Validated on construction: bad input changes nothing."""

    owner_uid: str
    home_id: str
    mode: PairingMode
    time_zone_id: str
    expected_devices: int = 1
    device_uuids: tuple[str, ...] = ()
    allowed_products: frozenset[str] | None = None
    unexpected_policy: UnexpectedProductPolicy = UnexpectedProductPolicy.RECORD_ONLY
    idempotency_key: str | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.expected_devices <= MAX_EXPECTED_DEVICES:
            raise InvalidSession("expected_devices", f"must be 1-{MAX_EXPECTED_DEVICES}")
        if self.mode is not PairingMode.EZ and self.expected_devices != 1:
            raise InvalidSession("expected_devices", f"{self.mode.value} mode pairs exactly one device")
        needs_uuid = self.mode in (PairingMode.BLE, PairingMode.COMBO)
        if needs_uuid and len(self.device_uuids) != MAX_DEVICE_UUIDS:
            raise InvalidSession("device_uuids", f"{self.mode.value} mode needs exactly one device uuid")
        if not needs_uuid and self.device_uuids:
            raise InvalidSession(
                "device_uuids", f"only BLE and combo modes take device uuids, not {self.mode}"
            )
        if self.allowed_products is not None and not self.allowed_products:
            raise InvalidSession("allowed_products", "an allow-list must name at least one product")
        if self.unexpected_policy is UnexpectedProductPolicy.REMOVE and self.allowed_products is None:
            raise InvalidSession("unexpected_policy", "`remove` needs an allow-list of products")

    @property
    def max_devices(self) -> int:
        return self.expected_devices if self.mode is PairingMode.EZ else 1


@dataclass(frozen=True, slots=True)
class DeviceOutcome:
    """What became of one device. `key` is the device id (or name and code for a nameless failure)."""

    key: str
    kind: OutcomeKind
    at: datetime
    source: FactSource
    device_id: str | None = None
    product_id: str | None = None
    name: str | None = None
    failure: Failure | None = None
    previous_owner_uid: str | None = None
    removal: Removal | None = None


@dataclass(frozen=True, slots=True)
class Activation:
    """A device activated with the session's token (`at`: when it did, as far as we can tell)."""

    device_id: str
    at: datetime
    source: FactSource
    product_id: str | None = None
    name: str | None = None
    previous_owner_uid: str | None = None
    binding_mode: BindingMode | None = None


@dataclass(frozen=True, slots=True)
class ActivationFailure:
    """A device failed to activate with the token, with Tuya's code."""

    code: str
    at: datetime
    source: FactSource
    device_id: str | None = None
    name: str | None = None
    message: str | None = None
    binding_mode: BindingMode | None = None

    @property
    def key(self) -> str:
        return self.device_id or f"unnamed:{self.name or '-'}:{self.code}"


@dataclass(frozen=True, slots=True)
class PairingSession:
    session_id: str
    request: SessionRequest
    region: str
    token: str  # the bare Tuya token: what `bindUser` quotes back; never the secret
    issued_at: datetime
    expires_at: datetime
    state: SessionState = SessionState.ACTIVE
    version: int = 0
    outcomes: tuple[DeviceOutcome, ...] = ()
    ended_at: datetime | None = None

    # --- reading ------------------------------------------------------------------------------------

    @property
    def ended(self) -> bool:
        return self.state is not SessionState.ACTIVE

    def outcome(self, key: str) -> DeviceOutcome | None:
        return next((o for o in self.outcomes if o.key == key), None)

    def count(self, kind: OutcomeKind) -> int:
        return sum(1 for o in self.outcomes if o.kind is kind)

    @property
    def token_uses(self) -> int:
        """Activations that used the token: paired devices, plus unexpected ones in single-device modes."""
        paired = self.count(OutcomeKind.PAIRED)
        if self.request.max_devices == 1:
            return paired + self.count(OutcomeKind.UNEXPECTED_PRODUCT)
        return paired

    def honours_token_at(self, at: datetime) -> bool:
        return not self.ended and at < self.expires_at and self.token_uses < self.request.max_devices

    def final_state(self) -> SessionState:
        paired = self.count(OutcomeKind.PAIRED)
        if paired >= self.request.expected_devices:
            return SessionState.SUCCEEDED
        if paired:
            return SessionState.PARTIALLY_SUCCEEDED
        if self.count(OutcomeKind.FAILED) or self.count(OutcomeKind.UNEXPECTED_PRODUCT):
            return SessionState.FAILED
        return SessionState.EXPIRED

    def pending_removals(self) -> list[DeviceOutcome]:
        return [o for o in self.outcomes if o.removal is Removal.PENDING]


@dataclass(frozen=True, slots=True)
class Transition:
    """The session after a transition and the events it causes; `changed` is False for a no-op."""

    session: PairingSession
    events: tuple[Payload, ...] = field(default=())
    changed: bool = True


def _unchanged(session: PairingSession) -> Transition:
    return Transition(session, (), changed=False)


def _facts(session: PairingSession) -> dict[str, str]:
    return {"token": session.token, "home_id": session.request.home_id, "session_id": session.session_id}


# --- transitions -----------------------------------------------------------------------------------------


def open_session(
    session_id: str,
    request: SessionRequest,
    *,
    region: str,
    token: str,
    lifetime: timedelta,
    now: datetime,
) -> Transition:
    """A new active session for a token Tuya just issued (`lifetime`: Tuya's `expire_time`)."""
    if lifetime <= timedelta(0):
        raise InvalidSession("expire_time", "Tuya returned a token that is already expired")
    session = PairingSession(
        session_id=session_id,
        request=request,
        region=region,
        token=token,
        issued_at=now,
        expires_at=now + lifetime,
    )
    issued = PairingTokenIssued(
        **_facts(session),
        owner_uid=request.owner_uid,
        mode=request.mode,
        tuya_region=region,
        expires_at=session.expires_at,
        max_devices=request.max_devices,
    )
    return Transition(session, (issued,))


def ensure_token_usable(session: PairingSession, now: datetime) -> None:
    """Raise `TokenRefused` unless the token may still be handed to a device (e.g. a custom provisioner)."""
    if session.state is SessionState.CANCELLED:
        raise TokenRefused("cancelled", "the pairing session was cancelled; its token is no longer honoured")
    # a token that paired its devices is "used up" for good, also once its time is over
    if session.token_uses >= session.request.max_devices:
        raise TokenRefused("used_up", "the token already paired its devices and is void; open a new session")
    if now >= session.expires_at or session.ended:
        raise TokenRefused("expired", f"the token expired at {session.expires_at.isoformat()}")


def _end(session: PairingSession, state: SessionState, now: datetime) -> tuple[PairingSession, Payload]:
    ended = replace(session, state=state, ended_at=now)
    event = PairingSessionEnded(
        **_facts(session),
        state=state,
        paired_devices=ended.count(OutcomeKind.PAIRED),
        failed_devices=ended.count(OutcomeKind.FAILED),
        unexpected_devices=ended.count(OutcomeKind.UNEXPECTED_PRODUCT),
    )
    return ended, event


def _late(session: PairingSession, fact: Activation) -> Transition:
    outcome = DeviceOutcome(
        key=fact.device_id,
        kind=OutcomeKind.LATE,
        at=fact.at,
        source=fact.source,
        device_id=fact.device_id,
        product_id=fact.product_id,
        name=fact.name,
    )
    event = LateActivation(
        **_facts(session), device_id=fact.device_id, product_id=fact.product_id, session_state=session.state
    )
    return Transition(replace(session, outcomes=(*session.outcomes, outcome)), (event,))


def _without(session: PairingSession, key: str) -> tuple[DeviceOutcome, ...]:
    return tuple(o for o in session.outcomes if o.key != key)


def _rebound_from(session: PairingSession, fact: Activation) -> str | None:
    previous = fact.previous_owner_uid
    return previous if previous not in (None, session.request.owner_uid) else None


def _previous_owner_learned(session: PairingSession, known: DeviceOutcome, fact: Activation) -> Transition:
    """A push of a rebind the poll already recorded: its previous owner joins the outcome once, and a
    medium-bound product's previous owner is notified then (in time or not, the rebind happened)."""
    previous = _rebound_from(session, fact)
    if known.kind is not OutcomeKind.PAIRED or known.previous_owner_uid is not None or previous is None:
        return _unchanged(session)
    outcome = replace(known, previous_owner_uid=previous)
    updated = replace(session, outcomes=tuple(outcome if o is known else o for o in session.outcomes))
    events: list[Payload] = []
    if fact.binding_mode is BindingMode.MEDIUM:
        events.append(
            PreviousOwnerNotified(
                **_facts(session),
                device_id=fact.device_id,
                owner_uid=session.request.owner_uid,
                previous_owner_uid=previous,
            )
        )
    return Transition(updated, tuple(events))


def record_activation(session: PairingSession, fact: Activation) -> Transition:
    """A device activated with the token (push or poll); see the module rules."""
    known = session.outcome(fact.device_id)
    if known is not None and known.kind is not OutcomeKind.FAILED:
        # a duplicate, or the other path reporting the same activation; only a push can name the
        # previous owner a poll could not see (the poll got there first)
        return _previous_owner_learned(session, known, fact)
    if fact.source is FactSource.POLL and not session.ended:
        # the token result lists only activations Tuya accepted, and Tuya stops accepting at expiry: a
        # device first seen by a poll during the settle window activated in time, whenever we learn of it
        fact = replace(fact, at=min(fact.at, session.expires_at - _TICK))
    if not session.honours_token_at(fact.at):
        return _late(session, fact)

    allowed = session.request.allowed_products
    if allowed is not None and fact.product_id not in allowed:
        policy = session.request.unexpected_policy
        outcome = DeviceOutcome(
            key=fact.device_id,
            kind=OutcomeKind.UNEXPECTED_PRODUCT,
            at=fact.at,
            source=fact.source,
            device_id=fact.device_id,
            product_id=fact.product_id,
            name=fact.name,
            previous_owner_uid=fact.previous_owner_uid,
            removal=Removal.PENDING if policy is UnexpectedProductPolicy.REMOVE else None,
        )
        events: list[Payload] = [
            UnexpectedProductPaired(
                **_facts(session), device_id=fact.device_id, product_id=fact.product_id, policy=policy
            )
        ]
    else:
        outcome = DeviceOutcome(
            key=fact.device_id,
            kind=OutcomeKind.PAIRED,
            at=fact.at,
            source=fact.source,
            device_id=fact.device_id,
            product_id=fact.product_id,
            name=fact.name,
            previous_owner_uid=fact.previous_owner_uid,
        )
        rebound = fact.previous_owner_uid not in (None, session.request.owner_uid)
        events = [
            DevicePaired(
                **_facts(session),
                device_id=fact.device_id,
                product_id=fact.product_id,
                owner_uid=session.request.owner_uid,
                name=fact.name,
                previous_owner_uid=fact.previous_owner_uid if rebound else None,
            )
        ]
        if rebound and fact.binding_mode is BindingMode.MEDIUM and fact.previous_owner_uid:
            events.append(
                PreviousOwnerNotified(
                    **_facts(session),
                    device_id=fact.device_id,
                    owner_uid=session.request.owner_uid,
                    previous_owner_uid=fact.previous_owner_uid,
                )
            )

    updated = replace(session, outcomes=(*_without(session, fact.device_id), outcome))
    if updated.token_uses >= updated.request.max_devices:
        events.append(PairingTokenConsumed(**_facts(session), paired_devices=updated.token_uses))
        updated, ended = _end(updated, updated.final_state(), fact.at)
        events.append(ended)
    return Transition(updated, tuple(events))


def _typed_failure(fact: ActivationFailure) -> Failure:
    failure = failure_for(fact.code, fact.message)
    strongly_bound = fact.binding_mode in (None, BindingMode.STRONG)
    if failure.code == str(ALREADY_BOUND_CODE) and strongly_bound:
        return Failure(
            failure.code,
            FailureCause.BOUND_TO_ANOTHER_ACCOUNT,
            "bound to another account",
            BATCH_UNBINDING_HINT,
        )
    return failure


def record_failure(session: PairingSession, fact: ActivationFailure) -> Transition:
    """A device failed to activate (token result's failed list); see the module rules."""
    if session.ended or session.outcome(fact.key) is not None:
        return _unchanged(session)
    failure = _typed_failure(fact)
    outcome = DeviceOutcome(
        key=fact.key,
        kind=OutcomeKind.FAILED,
        at=fact.at,
        source=fact.source,
        device_id=fact.device_id,
        name=fact.name,
        failure=failure,
    )
    event = PairingFailed(
        **_facts(session),
        device_id=fact.device_id,
        device_name=fact.name,
        tuya_error_code=failure.code[:32],
        tuya_error_message=(fact.message or failure.description)[:1024],
        cause=failure.cause.value,
        hint=failure.hint,
    )
    return Transition(replace(session, outcomes=(*session.outcomes, outcome)), (event,))


def cancel(session: PairingSession, now: datetime) -> Transition:
    """The operator stops the session (Tuya's stopConfig): the token is no longer honoured by us."""
    if session.state is SessionState.CANCELLED:
        return _unchanged(session)
    if session.ended:
        raise SessionAlreadyEnded(session.state)
    ended, event = _end(session, SessionState.CANCELLED, now)
    return Transition(ended, (event,))


def close_if_expired(session: PairingSession, now: datetime, settle: timedelta = timedelta(0)) -> Transition:
    """Close an active session whose token expired at least `settle` ago."""
    if session.ended or now < session.expires_at + settle:
        return _unchanged(session)
    expired = PairingTokenExpired(**_facts(session), paired_devices=session.token_uses)
    ended, event = _end(session, session.final_state(), session.expires_at)
    return Transition(ended, (expired, event))


def record_removal(session: PairingSession, device_id: str, *, removed: bool) -> Transition:
    """The outcome of removing an unexpected product's device again (policy `remove`)."""
    outcome = session.outcome(device_id)
    if outcome is None or outcome.removal is not Removal.PENDING:
        return _unchanged(session)
    done = replace(outcome, removal=Removal.DONE if removed else Removal.FAILED)
    outcomes = tuple(done if o.key == device_id else o for o in session.outcomes)
    return Transition(replace(session, outcomes=outcomes), ())


def record_token_result(
    session: PairingSession, activations: Sequence[Activation], failures: Sequence[ActivationFailure]
) -> Transition:
    """One poll of Tuya's token result: every success, then every failure, as one transition."""
    events: list[Payload] = []
    changed = False
    for activation in activations:
        step = record_activation(session, activation)
        session, changed = step.session, changed or step.changed
        events.extend(step.events)
    for failure in failures:
        step = record_failure(session, failure)
        session, changed = step.session, changed or step.changed
        events.extend(step.events)
    return Transition(session, tuple(events), changed=changed)
