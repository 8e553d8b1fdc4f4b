"""unbinding's handlers: plain async functions taking a command and the ports.

Every step is one conditional single-document write carrying its events; a lost race reloads and goes on
from what the store holds, so running a handler twice (redelivery, a second replica, recovery after a
crash) never does anything twice. Tuya is called only after the intent is durable (see `domain.unbind`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta

import orjson
from pydantic import SecretStr

from fleet_contracts.unbinding import RefusalCause, RequestUnbindBatch, UnbindMode
from fleet_unbinding.domain import batch as batches
from fleet_unbinding.domain import quota, unbind
from fleet_unbinding.domain.authorization import AuthorizationRecord, ProductAuthorization
from fleet_unbinding.domain.batch import Batch, BatchError, BatchStatus, Prediction
from fleet_unbinding.domain.qr import (
    ALREADY_BOUND_CODES,
    Admission,
    QrSession,
    is_unbind_request,
    open_session,
)
from fleet_unbinding.domain.quota import BlockGrant, QuotaDay, QuotaScope, Usage
from fleet_unbinding.domain.unbind import DeviceFacts, DeviceUnbind, Step, UnbindState
from fleet_unbinding.ports import (
    AuthorizationStore,
    BatchStore,
    Clock,
    Devices,
    PairingTokens,
    QrToken,
    QuotaCounters,
    QuotaLimits,
    TuyaRefused,
    TuyaUnreachable,
    UnbindStore,
)
from fleet_unbinding.service_layer.events import EventFactory
from fleet_unbinding.service_layer.quota_blocks import QuotaAllocator

log = logging.getLogger(__name__)

_RACE_TRIES = 8


class NotFound(LookupError):
    pass


class Conflict(RuntimeError):
    """A write kept losing races; the caller may retry later."""


@dataclass
class Ports:
    batches: BatchStore
    unbinds: UnbindStore
    counters: QuotaCounters
    limits: QuotaLimits
    authorizations: AuthorizationStore
    devices: Devices
    events: EventFactory
    clock: Clock
    quota_day: QuotaDay = field(default_factory=QuotaDay)
    default_limits: Mapping[QuotaScope, int] = field(
        default_factory=lambda: dict.fromkeys(QuotaScope, quota.DEFAULT_DAILY_LIMIT)
    )
    approval_threshold: int = 100
    # devices of list and wired batches in progress at once in this process (all batches together)
    device_concurrency: int = 8
    max_calls: int = 3
    # longer than any one removal call: only then may another worker reconcile an intent it did not record
    call_lease: timedelta = timedelta(seconds=30)
    retry_pause_s: float = 0.5
    already_bound_codes: frozenset[str] = ALREADY_BOUND_CODES
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    quota_block_size: int = 32
    # this process's quota blocks (built from `counters`; `new_process()` starts over, as after a restart)
    quota: QuotaAllocator = field(init=False)
    _gate: asyncio.Semaphore | None = field(default=None, init=False)
    device_runs: int = field(default=0, init=False)  # device runs (`_advance_all`) under way in this process

    def __post_init__(self) -> None:
        self.new_process()

    def new_process(self) -> None:
        """Forget this process's in-memory state (quota blocks, device gate): what a restart does."""
        self.quota = QuotaAllocator(
            self.counters, self.clock, block_size=self.quota_block_size, lease=self.call_lease
        )
        self._gate = None

    @property
    def gate(self) -> asyncio.Semaphore:
        if self._gate is None:
            self._gate = asyncio.Semaphore(self.device_concurrency)
        return self._gate


# --- batches ------------------------------------------------------------------------------------------


async def request_batch(
    p: Ports,
    request: RequestUnbindBatch,
    *,
    idempotency_key: str | None = None,
    qr: QrSession | None = None,
) -> tuple[Batch, bool]:
    """Accept a batch: (the batch, True) when created, (the existing batch, False) for a repeated key."""
    if idempotency_key is not None:
        request = request.model_copy(
            update={"batch_id": batches.batch_id_for(request.operator_id, idempotency_key)}
        )
    existing = await p.batches.get(request.batch_id)
    if existing is not None:
        return _repeat(existing, request), False
    now = p.clock()
    batch, events = batches.create(
        request, now, approval_threshold=p.approval_threshold, qr=qr, idempotency_key=idempotency_key
    )
    if not await p.batches.add(batch, p.events.outbox(events, now)):
        stored = await p.batches.get(request.batch_id)
        if stored is None:
            raise Conflict(f"batch {request.batch_id} neither inserted nor found")
        return _repeat(stored, request), False
    return await _add_devices(p, batch), True


async def _add_devices(p: Ports, batch: Batch) -> Batch:
    """Create the device documents of a list/wired batch (idempotent: a crash half-way is completed by the
    next run), then mark the batch so later runs skip it."""
    if batch.devices_added:
        return batch
    await p.unbinds.add_many(
        [
            unbind.new(
                batch.batch_id,
                d,
                batch.operator_id,
                batch.mode,
                reset=batch.reset,
                batch_product_id=batch.product_id,
            )
            for d in batch.device_ids
        ]
    )
    return await _update_batch(
        p, batch.batch_id, lambda b: b if b.devices_added else replace(b, devices_added=True)
    )


def _repeat(existing: Batch, request: RequestUnbindBatch) -> Batch:
    if not batches.same_request(existing, request):
        raise BatchError("this idempotency key (batch id) was used for a different request")
    return existing


async def _update_batch(p: Ports, batch_id: str, change: Callable[[Batch], Batch]) -> Batch:
    for _ in range(_RACE_TRIES):
        stored = await p.batches.get(batch_id)
        if stored is None:
            raise NotFound(f"no batch {batch_id}")
        changed = change(stored)
        if changed is stored:
            return stored
        changed = replace(changed, version=stored.version + 1)
        if await p.batches.save(changed, []):
            return changed
    raise Conflict(f"batch {batch_id} kept changing")


async def approve_batch(p: Ports, batch_id: str, approver: str) -> Batch:
    return await _update_batch(p, batch_id, lambda b: batches.approve(b, approver))


async def cancel_batch(p: Ports, batch_id: str, by: str) -> Batch:
    """Stop a batch: every device not yet done is refused `cancelled`; in-flight calls finish."""
    batch = await _update_batch(p, batch_id, lambda b: batches.cancel(b, by))
    batch = await _add_devices(p, batch)
    for u in await p.unbinds.open(batch_id):
        await _cancel_device(p, u)
    await try_finish(p, batch_id)
    return batch


async def _cancel_device(p: Ports, u: DeviceUnbind) -> None:
    for _ in range(_RACE_TRIES):
        step = unbind.cancel(u, p.clock())
        if step is None:
            return
        saved = await _save(p, u, step)
        if saved is not None:
            await _refund_if_held(p, saved)
            return
        fresh = await p.unbinds.get(u.batch_id, u.device_id)
        if fresh is None:
            return
        u = fresh


async def run_batch(p: Ports, batch_id: str) -> Batch | None:
    """Work every open device of a running batch to its result, then finish the batch if it may."""
    batch = await p.batches.get(batch_id)
    if batch is None or batch.status is BatchStatus.FINISHED:
        return batch
    batch = await _add_devices(p, batch)
    if batch.status is not BatchStatus.RUNNING:
        return batch
    if batch.cancel_requested:
        await cancel_batch(p, batch_id, batch.cancelled_by or batch.operator_id)
        return await p.batches.get(batch_id)
    await _advance_all(p, await p.unbinds.open(batch_id), p.gate)
    return await try_finish(p, batch_id)


async def _advance_all(p: Ports, unbinds: list[DeviceUnbind], gate: asyncio.Semaphore) -> None:
    """Advance devices, at most as many at once as `gate` lets through (each device's steps stay
    sequential); then, when no other run of this process is under way, close its quota blocks, so their
    unused units go back at once."""
    if not unbinds:
        return

    async def one(u: DeviceUnbind) -> None:
        async with gate:
            await advance(p, u)

    p.device_runs += 1
    try:
        await asyncio.gather(*(one(u) for u in unbinds))
    finally:
        p.device_runs -= 1
        if p.device_runs == 0:
            await p.quota.close_idle(everything=True)


async def try_finish(p: Ports, batch_id: str) -> Batch | None:
    for _ in range(_RACE_TRIES):
        batch = await p.batches.get(batch_id)
        now = p.clock()
        if batch is None or not batch.may_finish(now):
            return batch
        still_open, tally = await p.unbinds.tally(batch_id)
        if still_open:
            return batch
        done, events = batches.finish(batch, tally, now)
        done = replace(done, version=batch.version + 1)
        if await p.batches.save(done, p.events.outbox(events, now)):
            return done
    raise Conflict(f"batch {batch_id} kept changing")


# --- QR sessions --------------------------------------------------------------------------------------


def qr_payload(ssid: str, password: SecretStr, token: QrToken) -> SecretStr:
    """The QR content `{"s", "p", "t"}` (Wi-Fi and the assembled token): returned once, never stored."""
    body = {"s": ssid, "p": password.get_secret_value(), "t": token.assembled.get_secret_value()}
    return SecretStr(orjson.dumps(body).decode())


async def open_qr_batch(
    p: Ports,
    tokens: PairingTokens,
    request: RequestUnbindBatch,
    *,
    uid: str,
    home_id: str | None,
    ssid: str,
    password: SecretStr,
    validity: timedelta,
    time_zone_id: str = "Etc/UTC",
    idempotency_key: str | None = None,
) -> tuple[Batch, SecretStr | None]:
    """Open a QR batch: a pairing token for the operator's app account, the session around it, and the
    payload to show (None when an idempotency key names an existing batch: the payload is never kept)."""
    if request.mode is not UnbindMode.QR:
        raise BatchError("a QR batch needs mode qr")
    if idempotency_key is not None:
        existing = await p.batches.get(batches.batch_id_for(request.operator_id, idempotency_key))
        if existing is not None:
            return _repeat(existing, request.model_copy(update={"batch_id": existing.batch_id})), None
    token = await tokens.issue(uid=uid, home_id=home_id, time_zone_id=time_zone_id)
    session = open_session(token.token, now=p.clock(), validity=validity, token_expires_at=token.expires_at)
    batch, created = await request_batch(p, request, idempotency_key=idempotency_key, qr=session)
    return batch, qr_payload(ssid, password, token) if created else None


async def poll_qr(p: Ports, tokens: PairingTokens, batch_id: str) -> int:
    """Ask Tuya which devices failed to pair with the batch's token and handle each scan; then finish the
    batch once its session expired and every device has a result. Returns the scans handled."""
    batch = await p.batches.get(batch_id)
    if batch is None or batch.qr is None or batch.status is BatchStatus.FINISHED:
        return 0
    # Tuya lists a device once per failed attempt: the first attempt places it
    failed = await tokens.failed_devices(batch.qr.token)
    scans = list(dict.fromkeys(d for d, code in failed if _is_scan(p, code)))
    # Tuya keeps listing devices already done: only the others are (re)handled
    done = {u.device_id for u in await p.unbinds.of_batch(batch_id) if u.state.final}
    admitted = await _admit_scans(p, batch_id, [d for d in scans if d not in done])
    # a session's devices (<= 30) do not queue behind list batches' devices in this process's gate
    await _advance_all(p, [u for u, runs in admitted if runs], asyncio.Semaphore(len(admitted) or 1))
    await try_finish(p, batch_id)
    return len(admitted)


async def qr_scan(
    p: Ports, batch_id: str, device_id: str, pairing_error_code: str | None
) -> DeviceUnbind | None:
    """A device failed to pair with the batch's QR token: when it is "already bound" (113), admit it (or
    refuse it for an expired or full QR) and unbind it. Returns the device's state, None when not ours."""
    if not _is_scan(p, pairing_error_code):
        return None
    [(u, runs)] = await _admit_scans(p, batch_id, [device_id])
    return await advance(p, u) if runs else u


def _is_scan(p: Ports, pairing_error_code: str | None) -> bool:
    return is_unbind_request(pairing_error_code, p.already_bound_codes)


async def _admit_scans(p: Ports, batch_id: str, device_ids: list[str]) -> list[tuple[DeviceUnbind, bool]]:
    """Admit (or refuse) scanning devices, in the order given (it decides who is the 31st), with one batch
    write: each device's state, and whether its unbind should run now."""
    decisions: dict[str, Admission] = {}

    def admit_all(batch: Batch) -> Batch:
        decisions.clear()
        for device_id in device_ids:
            batch, decisions[device_id] = batches.admit(batch, device_id, p.clock())
        return batch

    if not device_ids:
        return []
    batch = await _update_batch(p, batch_id, admit_all)
    # a QR device is unbound and reset: it is left ready to pair again (already there: left as it is)
    await p.unbinds.add_many(
        [
            unbind.new(
                batch_id, d, batch.operator_id, batch.mode, reset=True, batch_product_id=batch.product_id
            )
            for d in device_ids
        ]
    )
    stored = {u.device_id: u for u in await p.unbinds.of_batch(batch_id)}
    out = []
    for device_id in device_ids:
        u = stored.get(device_id)
        if u is None:
            raise Conflict(f"device {device_id} of batch {batch_id} vanished")
        cause = decisions[device_id].refusal
        if cause is not None:
            if not u.state.final:
                u = await _save(p, u, unbind.refuse(u, cause, p.clock())) or u
            out.append((u, False))
        else:
            out.append((u, batch.status is BatchStatus.RUNNING and not u.state.final))
    return out


# --- one device ---------------------------------------------------------------------------------------


async def advance(p: Ports, u: DeviceUnbind) -> DeviceUnbind:
    """Take one device from wherever it stands to its result (or leave it for a later run: Tuya
    unreachable, or another worker's call in flight)."""
    last_code: str | None = None
    phase = "none"  # "intent": we hold the current intent; "called": our call under it has ended
    while not u.state.final:
        try:
            match u.state:
                case UnbindState.PENDING:
                    moved = await _check_and_start(p, u)
                    phase = "intent" if moved is not None and moved.state is UnbindState.CALLING else "none"
                case UnbindState.RESERVED:
                    moved = await _write(p, u, unbind.intend(u, p.clock()))
                    phase = "intent" if moved is not None else "none"
                case UnbindState.CALLING if phase == "intent":
                    moved, last_code = await _call(p, u)
                    phase = "called"
                case UnbindState.CALLING if phase == "called" or unbind.may_reconcile(
                    u, p.clock(), p.call_lease
                ):
                    moved, again = await _reconcile(p, u, last_code)
                    phase = "intent" if again else "none"
                case UnbindState.CALLING:
                    return u  # another worker's call may be in flight: its lease decides
                case _:
                    raise AssertionError(u.state)
        except TuyaUnreachable:
            log.warning("Tuya unreachable for %s; it stays %s for a later run", u.id, u.state)
            return u
        if moved is None:  # lost a race (a cancel, another worker): go on from what the store holds
            fresh = await p.unbinds.get(u.batch_id, u.device_id)
            if fresh is None:
                raise Conflict(f"{u.id} vanished")
            u, phase = fresh, "none"
        else:
            u = moved
    if u.units_held:
        u = await _refund_if_held(p, u)
    return u


async def _check_and_start(p: Ports, u: DeviceUnbind) -> DeviceUnbind | None:
    """Look the device up, check authorization and binding, take its quota units and record the intent to
    call Tuya, all in one conditional write (the units count only once that write names their blocks)."""
    now = p.clock()
    try:
        facts = await p.devices.lookup(u.device_id)
    except TuyaRefused as e:
        if e.code in unbind.INDEFINITE_CODES:  # rate limited or busy: not an answer about the device
            raise TuyaUnreachable(f"lookup refused ({e.code})") from e
        return await _save(
            p, u, unbind.refuse(u, RefusalCause.TUYA_ERROR, now, tuya_error_code=e.code or "?")
        )
    auth = await _authorization(p, facts)
    refusal = unbind.assess(u, facts, auth, now)
    if refusal is not None:
        return await _save(p, u, refusal)
    assert facts is not None
    assert facts.product_id is not None
    if u.units_listed:
        # an earlier version recorded the day, then reserved by name: whatever landed goes back first
        await _give_back(p, u)
    day = p.quota_day.key(now)
    grant = await p.quota.take(await _limits(p, u.operator_id, facts.product_id, day))
    if not isinstance(grant, BlockGrant):
        return await _save(p, u, unbind.quota_refused(u, facts, grant, p.clock()))
    consumed: bool | None = False
    try:
        started = unbind.start_call(u, facts, day, grant.blocks, p.clock())
        consumed = None  # from here the write may land, whatever we hear back
        moved = await _write(p, u, started)
        consumed = moved is not None
    finally:
        await p.quota.release(grant, consumed)
    return moved


async def _authorization(p: Ports, facts: DeviceFacts | None) -> ProductAuthorization | None:
    if facts is None or facts.product_id is None:
        return None
    auth = await p.authorizations.product(facts.product_id)
    return auth if auth.registered else None


async def _limits(
    p: Ports, operator_id: str, product_id: str, day: str
) -> list[tuple[quota.CounterKey, int]]:
    keys = quota.counter_keys(operator_id, product_id, day)
    out = []
    for key in keys:
        history = await p.limits.history(key.scope, key.subject)
        out.append((key, quota.limit_of(history, p.default_limits[key.scope])))
    return out


async def _call(p: Ports, u: DeviceUnbind) -> tuple[DeviceUnbind | None, str | None]:
    """Call Tuya for a device whose intent is durable. Returns the next state and the error code seen."""
    try:
        await p.devices.remove(u.device_id, reset=u.reset)
    except TuyaRefused as e:
        step = unbind.call_failed(u, e.code, p.clock())
        if step is None:
            await p.sleep(p.retry_pause_s)  # rate limited or busy: Tuya did not run it; reconcile
            return u, e.code
        return await _save(p, u, step), e.code
    except TuyaUnreachable:
        return u, None  # unknown whether it ran: reconcile
    return await _save(p, u, unbind.call_succeeded(u, p.clock())), None


async def _reconcile(p: Ports, u: DeviceUnbind, last_code: str | None) -> tuple[DeviceUnbind | None, bool]:
    """Decide a CALLING device from Tuya's view of it; (next state, whether to call Tuya now)."""
    try:
        facts = await p.devices.lookup(u.device_id)
    except TuyaRefused as e:
        # without Tuya's view the outcome is unknown: the device stays CALLING for a later run
        raise TuyaUnreachable(f"lookup refused ({e.code}) while reconciling") from e
    decision = unbind.reconcile(u, facts, max_calls=p.max_calls, last_code=last_code)
    final = unbind.reconciled(u, decision, p.clock(), last_code=last_code)
    if final is not None:
        return await _save(p, u, final), False
    again = await _write(p, u, unbind.intend(u, p.clock()))
    return again, again is not None


async def _refund_if_held(p: Ports, u: DeviceUnbind) -> DeviceUnbind:
    if u.state is not UnbindState.REFUSED or not u.units_held:
        return u
    await _give_back(p, u)
    return await _write(p, u, unbind.refunded(u)) or u


async def _give_back(p: Ports, u: DeviceUnbind) -> None:
    """Give back the device's unit in both counters of its quota day (idempotent)."""
    if u.quota_day is None or u.product_id is None:
        return
    keys = quota.counter_keys(u.operator_id, u.product_id, u.quota_day)
    unit = quota.unit_id(u.batch_id, u.device_id)
    if u.units_listed:  # an earlier version's unit: only while listed (its reservation may not have landed)
        await p.counters.refund_listed(keys, unit)
    else:
        await p.counters.refund(keys, unit)


async def _write(p: Ports, before: DeviceUnbind, after: DeviceUnbind) -> DeviceUnbind | None:
    after = replace(after, version=before.version + 1)
    return after if await p.unbinds.save(after, []) else None


async def _save(p: Ports, before: DeviceUnbind, step: Step) -> DeviceUnbind | None:
    after, events = step
    after = replace(after, version=before.version + 1)
    return after if await p.unbinds.save(after, p.events.outbox(events, p.clock())) else None


async def settle_abandoned_blocks(p: Ports) -> int:
    """Settle quota blocks no live process settles (its process died, or could not know the outcome)
    once their `until` passed, by counting the devices whose state names them. Returns how many."""
    now, settled = p.clock(), 0
    for block in await p.counters.open_blocks():
        if p.quota.tracks(block.block_id) or block.until > now:
            continue
        consumed = await p.unbinds.holding(block.key, block.block_id)
        await p.counters.settle(block.key, block.block_id, block.n, consumed)
        settled += 1
    return settled


async def recover(p: Ports, *, limit: int = 1000) -> int:
    """At start-up: refund what crashed refusals still hold, settle abandoned quota blocks, then resume
    every running batch."""
    for u in await p.unbinds.refunds_due(limit):
        await _refund_if_held(p, u)
    await settle_abandoned_blocks(p)
    running = await p.batches.running(limit)
    for batch_id in running:
        await run_batch(p, batch_id)
    return len(running)


# --- dry run, quotas, authorizations -------------------------------------------------------------------


async def dry_run(p: Ports, operator_id: str, device_ids: list[str]) -> list[Prediction]:
    """What a list batch would do now; nothing is written, no unit is taken."""
    now = p.clock()
    day = p.quota_day.key(now)
    facts: dict[str, DeviceFacts | None] = {}
    for device_id in device_ids:
        try:
            facts[device_id] = await p.devices.lookup(device_id)
        except TuyaRefused:
            facts[device_id] = None
    products = {f.product_id for f in facts.values() if f is not None and f.product_id}
    auth = {pid: a for pid in products if (a := await p.authorizations.product(pid)).registered}
    remaining: dict[tuple[QuotaScope, str], int] = {}
    for scope, subject in [(QuotaScope.ACCOUNT, operator_id)] + [(QuotaScope.PRODUCT, x) for x in products]:
        remaining[(scope, subject)] = (await usage(p, scope, subject, day=day)).remaining
    return batches.dry_run(operator_id, device_ids, facts, auth, remaining)


async def usage(p: Ports, scope: QuotaScope, subject: str, *, day: str | None = None) -> Usage:
    now = p.clock()
    key = quota.CounterKey(scope, subject, day or p.quota_day.key(now))
    limit = quota.limit_of(await p.limits.history(scope, subject), p.default_limits[scope])
    reserved = await p.counters.used(key)
    held, held_until = 0, None
    # units of open blocks no device took: not used by anyone, but not free either until the block is
    # settled (by its process, or by count once its `until` passed if that process died)
    for block in await p.counters.open_blocks():
        unused = block.n - await p.unbinds.holding(key, block.block_id) if block.key == key else 0
        if unused > 0:
            held += unused
            held_until = block.until if held_until is None else max(held_until, block.until)
    return Usage(
        scope,
        subject,
        key.day,
        limit,
        reserved - held,
        p.quota_day.resets_at(now),
        held=held,
        held_until=held_until,
    )


async def set_limit(
    p: Ports, scope: QuotaScope, subject: str, *, limit: int, reason: str, actor: str
) -> quota.LimitOverride:
    for _ in range(_RACE_TRIES):
        history = await p.limits.history(scope, subject)
        record = quota.override(
            history, scope=scope, subject=subject, limit=limit, reason=reason, actor=actor, at=p.clock()
        )
        if await p.limits.append(record):
            return record
    raise Conflict(f"limit of {scope} {subject} kept changing")


async def manage_authorization(
    p: Ports, product_id: str, decide: Callable[[ProductAuthorization], AuthorizationRecord]
) -> AuthorizationRecord:
    """Append the record `decide` makes from the product's current state (register, grant, revoke,
    transfer from `domain.authorization`), folding again if another writer appended first."""
    for _ in range(_RACE_TRIES):
        record = decide(await p.authorizations.product(product_id))
        if await p.authorizations.append(record):
            return record
    raise Conflict(f"authorizations of {product_id} kept changing")


__all__ = [
    "Admission",
    "Conflict",
    "NotFound",
    "Ports",
    "UnbindMode",
    "advance",
    "approve_batch",
    "cancel_batch",
    "dry_run",
    "manage_authorization",
    "open_qr_batch",
    "poll_qr",
    "qr_scan",
    "recover",
    "request_batch",
    "run_batch",
    "set_limit",
    "settle_abandoned_blocks",
    "try_finish",
    "usage",
]
