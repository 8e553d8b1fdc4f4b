"""The device shadow and its merge rules: pure, order-independent, idempotent.

Every field is a last-writer-wins register ordered by a key that does not depend on delivery order:
- a DP by its device timestamp (ties broken by the canonical raw value, so any order gives one answer);
- presence by the device time of the online/offline report (offline wins a tie); last seen is a maximum;
- binding, name, DP names and firmware channels by Tuya's push time (those facts carry no device time).
- inactivity: with a timeout (the device's own, else its product's), a device is due at `last seen + timeout`;
  a check at that deadline marks it offline (cause `inactivity`) for as long as the deadline stands. Any
  report later than the last seen moves the deadline, which ends the inactivity ("back on its next report").
  A check for a deadline that no longer stands changes nothing. Checks are only made from a stored deadline,
  so a check always comes after the report that set it; given that, any order gives one state. The
  per-device timeout is a register ordered by the server time of the operator's command.
A report older than what the shadow holds for its field changes nothing; a duplicate changes nothing. So any
permutation of a set of reports, with duplicates, merges to the same state as in-order delivery.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson

from fleet_contracts.tuya import DpType
from fleet_status.domain.dp_schema import DpSchema, InvalidDpValue, type_value


class BindingState(StrEnum):
    BOUND = "bound"
    UNBOUND = "unbound"
    REMOVED = "removed"


_BINDING_RANK = {BindingState.BOUND: 0, BindingState.UNBOUND: 1, BindingState.REMOVED: 2}


def _canonical(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


@dataclass(slots=True)
class DpState:
    """One DP in the shadow: the typed value, the raw value, and the device time it was reported at."""

    code: str
    value: Any
    raw: Any
    device_time_ms: int
    dp_id: int | None = None
    type: DpType | None = None
    flags: dict[str, bool] | None = None
    source: str = "device"  # "device" (reported) or "cloud" (reconciled from the OpenAPI)

    def order_key(self) -> tuple[int, bytes]:
        return (self.device_time_ms, _canonical(self.raw))


@dataclass(slots=True)
class Presence:
    online: bool | None = None  # as last reported (online/offline messages)
    changed_at_ms: int | None = None  # device time of the online/offline report that decided `online`
    last_seen_ms: int | None = None  # latest device time of any report
    # when the device is due to be found silent (last seen + timeout); None without a timeout or once inactive
    deadline_ms: int | None = None
    inactive_at_ms: int | None = None  # the deadline at which it was found silent, until its next report

    def order_key(self) -> tuple[int, int]:
        # Offline wins a tie: a device that says both at one instant is not reachable.
        return (self.changed_at_ms or -1, 0 if self.online else 1)

    @property
    def effective_online(self) -> bool | None:
        """Online as the shadow tells it: offline while inactive, else as reported."""
        return False if self.inactive_at_ms is not None else self.online

    @property
    def cause(self) -> str | None:
        if self.inactive_at_ms is not None:
            return "inactivity"
        return None if self.online is None else "reported"


@dataclass(slots=True)
class InactivityTimeout:
    """An operator's per-device inactivity timeout: ms (0: never), or None (back to the product's)."""

    timeout_ms: int | None
    at_ms: int  # server time of the command

    def order_key(self) -> tuple[int, int]:
        return (self.at_ms, -1 if self.timeout_ms is None else self.timeout_ms)


@dataclass(slots=True)
class Binding:
    state: BindingState | None = None
    owner_uid: str | None = None
    home_id: str | None = None
    at_ms: int = -1  # Tuya push time of the deciding event

    def order_key(self) -> tuple[int, int, bytes]:
        rank = _BINDING_RANK[self.state] if self.state is not None else -1
        return (self.at_ms, rank, _canonical([self.owner_uid, self.home_id]))


@dataclass(slots=True)
class Named:
    """A last-writer-wins name (device name, DP name) ordered by push time."""

    name: str
    at_ms: int

    def order_key(self) -> tuple[int, str]:
        return (self.at_ms, self.name)


@dataclass(slots=True)
class FirmwareChannel:
    """What the shadow knows about one upgrade channel (0 module, 9 MCU, 10+ extensions)."""

    channel: int
    upgrade_status: int
    at_ms: int
    progress_percent: int | None = None
    description: str | None = None
    version: str | None = None
    version_at_ms: int = -1

    def order_key(self) -> tuple[int, int, int]:
        return (self.at_ms, self.upgrade_status, self.progress_percent or 0)


@dataclass(slots=True)
class Shadow:
    """Everything status knows about one device. `version` counts durable changes (optimistic concurrency)."""

    device_id: str
    product_id: str | None = None
    version: int = 0
    dps: dict[str, DpState] = field(default_factory=dict)
    presence: Presence = field(default_factory=Presence)
    binding: Binding = field(default_factory=Binding)
    name: Named | None = None
    dp_names: dict[int, Named] = field(default_factory=dict)
    firmware: dict[int, FirmwareChannel] = field(default_factory=dict)
    inactivity_timeout: InactivityTimeout | None = None  # the device's own; None: its product's

    def state_equals(self, other: Shadow) -> bool:
        """Same state, whatever the version (two shadows merged from the same reports in any order)."""
        return _state(self) == _state(other)

    def copy(self) -> Shadow:
        """A copy a merge may change: its maps and the records a merge changes in place (DPs, presence,
        firmware channels) are copied. Values are never changed in place, so they are shared: a deep copy
        cost more than the merge itself, once per device written."""
        return Shadow(
            self.device_id,
            self.product_id,
            self.version,
            {code: copy.copy(dp) for code, dp in self.dps.items()},
            copy.copy(self.presence),
            copy.copy(self.binding),
            self.name,
            dict(self.dp_names),
            {channel: copy.copy(fw) for channel, fw in self.firmware.items()},
            self.inactivity_timeout,
        )


def _state(shadow: Shadow) -> tuple[Any, ...]:
    return (
        shadow.device_id,
        shadow.product_id,
        shadow.dps,
        shadow.presence,
        shadow.binding,
        shadow.name,
        shadow.dp_names,
        shadow.firmware,
        shadow.inactivity_timeout,
    )


# --- what a merge takes in ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DpReading:
    code: str
    raw: Any
    device_time_ms: int
    dp_id: int | None = None


@dataclass(frozen=True, slots=True)
class StatusReport:
    readings: tuple[DpReading, ...]
    source: str = "device"


@dataclass(frozen=True, slots=True)
class PresenceReport:
    online: bool
    device_time_ms: int
    source: str = "device"  # "cloud": observed through the OpenAPI, at the time it was asked


@dataclass(frozen=True, slots=True)
class BindingReport:
    state: BindingState
    push_time_ms: int
    owner_uid: str | None = None
    home_id: str | None = None


@dataclass(frozen=True, slots=True)
class NameReport:
    name: str
    push_time_ms: int


@dataclass(frozen=True, slots=True)
class DpNameReport:
    dp_id: int
    name: str
    push_time_ms: int


@dataclass(frozen=True, slots=True)
class FirmwareReport:
    channel: int
    upgrade_status: int
    push_time_ms: int
    progress_percent: int | None = None
    description: str | None = None
    version: str | None = None


@dataclass(frozen=True, slots=True)
class InactivityCheck:
    """The server's clock passed the device's deadline (device time) without a newer report being seen."""

    deadline_ms: int


@dataclass(frozen=True, slots=True)
class InactivityTimeoutSet:
    """An operator set (ms, 0: never) or cleared (None) the device's own inactivity timeout."""

    timeout_ms: int | None
    at_ms: int


Fact = (
    StatusReport
    | PresenceReport
    | BindingReport
    | NameReport
    | DpNameReport
    | FirmwareReport
    | InactivityCheck
    | InactivityTimeoutSet
)


@dataclass(frozen=True, slots=True)
class DeviceFacts:
    """Facts about one device, from one event (or one reconciliation): the input of `merge`."""

    device_id: str
    facts: tuple[Fact, ...]
    product_id: str | None = None


# --- what a merge gives back -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DpSampleOut:
    value: Any
    device_time_ms: int


@dataclass(frozen=True, slots=True)
class DpChanged:
    code: str
    dp_id: int | None
    old: DpSampleOut | None
    new: DpSampleOut


@dataclass(frozen=True, slots=True)
class PresenceChanged:
    online: bool
    changed_at_ms: int
    last_seen_ms: int | None
    cause: str | None = None  # "reported", "inactivity" or "report" (back after inactivity)


@dataclass(frozen=True, slots=True)
class AcceptedReading:
    """A DP value accepted into history (also when older than the shadow: history keeps every report)."""

    code: str
    dp_id: int | None
    value: Any
    raw: Any
    device_time_ms: int


@dataclass(frozen=True, slots=True)
class RefusedReading:
    code: str
    reason: str


@dataclass(slots=True)
class MergeResult:
    shadow: Shadow
    changed: bool
    dp_changes: list[DpChanged]
    presence_change: PresenceChanged | None
    history: list[AcceptedReading]
    presence_history: list[PresenceReport]
    refused: list[RefusedReading]


def merge(
    shadow: Shadow,
    batch: Iterable[DeviceFacts],
    schema: DpSchema | None,
    *,
    product_inactivity_ms: int | None = None,
) -> MergeResult:
    """Merge facts into a copy of `shadow`; the result says what really changed.

    `product_inactivity_ms` is the inactivity timeout of the device's product (None or 0: none), used unless
    the device has its own. The version is bumped once when anything changed: one durable write per merge.
    """
    new = shadow.copy()
    history: list[AcceptedReading] = []
    presence_history: list[PresenceReport] = []
    refused: list[RefusedReading] = []
    checks: set[int] = set()
    for item in batch:
        if item.device_id != shadow.device_id:
            raise ValueError(f"facts about {item.device_id} merged into the shadow of {shadow.device_id}")
        if item.product_id and new.product_id is None:
            new.product_id = item.product_id
        for fact in item.facts:
            if isinstance(fact, InactivityCheck):
                checks.add(fact.deadline_ms)
            else:
                _apply(new, fact, schema, history, presence_history, refused)
    _settle_inactivity(new, checks, product_inactivity_ms)
    dp_changes = _dp_changes(shadow, new)
    presence_change = _presence_change(shadow, new)
    changed = not shadow.state_equals(new)
    if changed:
        new.version = shadow.version + 1
    return MergeResult(new, changed, dp_changes, presence_change, history, presence_history, refused)


def _settle_inactivity(shadow: Shadow, checks: set[int], product_timeout_ms: int | None) -> None:
    """The deadline from the last seen report and the timeout in force; inactive if a check hit that deadline
    (now or in an earlier merge), active again once the deadline moved."""
    own = shadow.inactivity_timeout
    timeout = own.timeout_ms if own is not None and own.timeout_ms is not None else product_timeout_ms
    last = shadow.presence.last_seen_ms
    deadline = last + timeout if timeout and last is not None else None
    presence = shadow.presence
    if presence.inactive_at_ms is not None and presence.inactive_at_ms != deadline:
        presence.inactive_at_ms = None
    if deadline is not None and deadline in checks:
        presence.inactive_at_ms = deadline
    presence.deadline_ms = None if presence.inactive_at_ms is not None else deadline


def _seen(shadow: Shadow, device_time_ms: int) -> None:
    last = shadow.presence.last_seen_ms
    if last is None or device_time_ms > last:
        shadow.presence.last_seen_ms = device_time_ms


def _apply(
    shadow: Shadow,
    fact: Fact,
    schema: DpSchema | None,
    history: list[AcceptedReading],
    presence_history: list[PresenceReport],
    refused: list[RefusedReading],
) -> None:
    match fact:
        case StatusReport(readings=readings, source=source):
            for reading in readings:
                _apply_reading(shadow, reading, source, schema, history, refused)
        case PresenceReport(online=online, device_time_ms=t, source=source):
            if source == "device":
                presence_history.append(fact)
                _seen(shadow, t)
            candidate = Presence(online=online, changed_at_ms=t)
            if shadow.presence.online is None or candidate.order_key() > shadow.presence.order_key():
                shadow.presence.online = online
                shadow.presence.changed_at_ms = t
        case BindingReport():
            cleared = fact.state is not BindingState.BOUND
            candidate_b = Binding(
                state=fact.state,
                owner_uid=None if cleared else fact.owner_uid,
                home_id=None if cleared else fact.home_id,
                at_ms=fact.push_time_ms,
            )
            if candidate_b.order_key() > shadow.binding.order_key():
                shadow.binding = candidate_b
        case NameReport(name=name, push_time_ms=t):
            candidate_n = Named(name, t)
            if shadow.name is None or candidate_n.order_key() > shadow.name.order_key():
                shadow.name = candidate_n
        case DpNameReport(dp_id=dp_id, name=name, push_time_ms=t):
            current = shadow.dp_names.get(dp_id)
            candidate_dn = Named(name, t)
            if current is None or candidate_dn.order_key() > current.order_key():
                shadow.dp_names[dp_id] = candidate_dn
        case FirmwareReport():
            _apply_firmware(shadow, fact)
        case InactivityTimeoutSet(timeout_ms=ms, at_ms=t):
            candidate_t = InactivityTimeout(ms, t)
            current_t = shadow.inactivity_timeout
            if current_t is None or candidate_t.order_key() > current_t.order_key():
                shadow.inactivity_timeout = candidate_t
        case InactivityCheck():
            pass  # settled after every other fact (`_settle_inactivity`)


def _apply_reading(
    shadow: Shadow,
    reading: DpReading,
    source: str,
    schema: DpSchema | None,
    history: list[AcceptedReading],
    refused: list[RefusedReading],
) -> None:
    definition = schema.get(reading.code) if schema is not None else None
    try:
        typed = type_value(definition, reading.raw)
    except InvalidDpValue as e:
        refused.append(RefusedReading(reading.code, e.reason))
        return
    dp_id = reading.dp_id if reading.dp_id is not None else (definition.dp_id if definition else None)
    if source == "device":
        history.append(AcceptedReading(reading.code, dp_id, typed.value, typed.raw, reading.device_time_ms))
        _seen(shadow, reading.device_time_ms)
    candidate = DpState(
        code=reading.code,
        value=typed.value,
        raw=typed.raw,
        device_time_ms=reading.device_time_ms,
        dp_id=dp_id,
        type=typed.type,
        flags=typed.flags,
        source=source,
    )
    current = shadow.dps.get(reading.code)
    if current is None or candidate.order_key() > current.order_key():
        shadow.dps[reading.code] = candidate
    elif candidate.order_key() == current.order_key() and current.dp_id is None and dp_id is not None:
        current.dp_id = dp_id  # the same report, once with its dp id: keep the more complete copy


def _apply_firmware(shadow: Shadow, fact: FirmwareReport) -> None:
    current = shadow.firmware.get(fact.channel)
    candidate = FirmwareChannel(
        channel=fact.channel,
        upgrade_status=fact.upgrade_status,
        at_ms=fact.push_time_ms,
        progress_percent=fact.progress_percent,
        description=fact.description,
    )
    if current is None:
        current = shadow.firmware[fact.channel] = candidate
    elif candidate.order_key() > current.order_key():
        candidate.version, candidate.version_at_ms = current.version, current.version_at_ms
        current = shadow.firmware[fact.channel] = candidate
    if fact.version is not None and (fact.push_time_ms, fact.version) > (
        current.version_at_ms,
        current.version or "",
    ):
        current.version, current.version_at_ms = fact.version, fact.push_time_ms


def _dp_changes(old: Shadow, new: Shadow) -> list[DpChanged]:
    changes: list[DpChanged] = []
    for code, state in new.dps.items():
        before = old.dps.get(code)
        if before is not None and _canonical(before.value) == _canonical(state.value):
            continue  # a newer timestamp with the same value is not a change
        changes.append(
            DpChanged(
                code=code,
                dp_id=state.dp_id,
                old=None if before is None else DpSampleOut(before.value, before.device_time_ms),
                new=DpSampleOut(state.value, state.device_time_ms),
            )
        )
    return changes


def _presence_change(old: Shadow, new: Shadow) -> PresenceChanged | None:
    online, before = new.presence.effective_online, old.presence.effective_online
    if online is None or online == before:
        return None
    p = new.presence
    if p.inactive_at_ms is not None:
        return PresenceChanged(False, p.inactive_at_ms, p.last_seen_ms, "inactivity")
    moved = (p.last_seen_ms or -1) > (old.presence.last_seen_ms or -1)
    if old.presence.inactive_at_ms is not None and p.online == old.presence.online and moved:
        assert p.last_seen_ms is not None  # the inactivity ended: a newer report moved the deadline
        return PresenceChanged(True, p.last_seen_ms, p.last_seen_ms, "report")
    assert p.changed_at_ms is not None
    return PresenceChanged(online, p.changed_at_ms, p.last_seen_ms, "reported")
