"""pairing's handlers: plain async functions taking a command or event and the ports they use.

Every handler is idempotent: state changes go through `_apply`, a read-transition-conditional-write loop on
the session's version, and the domain's transitions change nothing for a fact already applied. A write that
loses a race is retried from a fresh read.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import partial

from pydantic import SecretStr

from fleet_contracts.device import DeviceBound, DeviceEvent, DeviceRemoved, DeviceUnbound
from fleet_contracts.pairing import PairingMode
from fleet_pairing.domain import session as rules
from fleet_pairing.domain.commands import CancelSession, CheckToken, OpenSession
from fleet_pairing.domain.credentials import ble_token, qr_payload
from fleet_pairing.domain.session import (
    Activation,
    ActivationFailure,
    FactSource,
    PairingSession,
    Transition,
)
from fleet_pairing.ports import (
    BindingModes,
    Clock,
    DeviceOwners,
    IdempotencyConflict,
    IdGenerator,
    SessionRepository,
    TuyaPairing,
)
from fleet_shared.tuya.errors import TuyaError

log = logging.getLogger(__name__)

DEFAULT_TOKEN_LIFETIME = timedelta(minutes=10)  # Tuya's guide, when Tuya's answer carries no expire_time
# a multi-device session may take many devices' pushes at once: each round of a race has one winner, so the
# tries cover the devices that commonly activate together; the jittered pause spreads the losers out
_WRITE_TRIES = 64
_BACKOFF_STEP_S = 0.001
_BACKOFF_MAX_S = 0.05


class SessionNotFound(LookupError):
    def __init__(self, what: str) -> None:
        super().__init__(f"no pairing session for {what}")


class WriteContention(RuntimeError):
    """The session kept changing under us; the caller may retry the whole operation."""


@dataclass(frozen=True, slots=True)
class OpenedSession:
    """What the caller gets back. The secrets exist only here, in memory, for this one answer.

    A replayed request (same idempotency key) returns the stored session without them: they were never
    stored, so they cannot be shown again; cancel it and open a new session to get a fresh token.
    """

    session: PairingSession
    replayed: bool
    assembled_token: SecretStr | None = None
    ble_token: SecretStr | None = None
    qr_payload: SecretStr | None = None


async def open_session(
    command: OpenSession,
    *,
    sessions: SessionRepository,
    tuya: TuyaPairing,
    clock: Clock,
    ids: IdGenerator,
    default_lifetime: timedelta = DEFAULT_TOKEN_LIFETIME,
) -> OpenedSession:
    """Get a token from Tuya and open a session for it; a repeated idempotency key returns the first one."""
    request = command.request
    key = request.idempotency_key
    if key is not None:
        existing = await sessions.by_idempotency_key(request.owner_uid, key)
        if existing is not None:
            return OpenedSession(existing, replayed=True)

    uuid = request.device_uuids[0] if request.device_uuids else None
    new = await tuya.create_token(
        owner_uid=request.owner_uid,
        home_id=request.home_id,
        time_zone_id=request.time_zone_id,
        mode=request.mode,
        device_uuid=uuid,
    )
    # everything the caller gets is derived before anything is stored: a bad token stores nothing
    assembled = new.issued.assembled()
    mode = request.mode
    ble = ble_token(assembled) if mode in (PairingMode.BLE, PairingMode.COMBO) else None
    payload = qr_payload(command.wifi, assembled) if command.wifi is not None else None
    opened = rules.open_session(
        ids.new_session_id(),
        request,
        region=new.issued.region,
        token=new.issued.token,
        lifetime=new.lifetime or default_lifetime,
        now=clock.now(),
    )
    opened = replace(opened, session=replace(opened.session, version=1))
    try:
        await sessions.add(opened)
    except IdempotencyConflict as conflict:
        # a concurrent request with the same key won; Tuya's token we got is simply never used
        return OpenedSession(conflict.existing, replayed=True)

    return OpenedSession(
        opened.session, replayed=False, assembled_token=assembled, ble_token=ble, qr_payload=payload
    )


def _loader(sessions: SessionRepository, session_id: str) -> Callable[[], Awaitable[PairingSession | None]]:
    return lambda: sessions.get(session_id)


async def _apply(
    sessions: SessionRepository,
    load: Callable[[], Awaitable[PairingSession | None]],
    transition: Callable[[PairingSession], Transition],
) -> PairingSession | None:
    """Read, transition, write conditionally on the version read; retried from a fresh read on a lost race.
    Returns the session as stored afterwards, or None when there is no such session."""
    for attempt in range(_WRITE_TRIES):
        if attempt:
            await asyncio.sleep(random.uniform(0, min(_BACKOFF_MAX_S, _BACKOFF_STEP_S * attempt)))
        current = await load()
        if current is None:
            return None
        result = transition(current)
        if not result.changed:
            return current
        stored = replace(result.session, version=current.version + 1)
        if await sessions.save(replace(result, session=stored), current.version):
            return stored
    raise WriteContention("the pairing session kept changing; retry")


async def cancel_session(
    command: CancelSession, *, sessions: SessionRepository, clock: Clock
) -> PairingSession:
    """Stop the session (Tuya's stopConfig): its token is no longer honoured, late activations are flagged.
    Raises `SessionNotFound`, or `SessionAlreadyEnded` if it ended otherwise; cancelling twice is a no-op."""
    now = clock.now()
    done = await _apply(sessions, lambda: sessions.get(command.session_id), lambda s: rules.cancel(s, now))
    if done is None:
        raise SessionNotFound(f"id {command.session_id}")
    return done


async def check_token(command: CheckToken, *, sessions: SessionRepository, clock: Clock) -> PairingSession:
    """The session of a token that is still honoured; raises `TokenRefused` (expired, used up, cancelled)."""
    session = await sessions.by_token(command.token)
    if session is None:
        raise SessionNotFound("this token")
    rules.ensure_token_usable(session, clock.now())
    return session


def _read_first(
    session: PairingSession | None, load: Callable[[], Awaitable[PairingSession | None]]
) -> Callable[[], Awaitable[PairingSession | None]]:
    """A loader whose first read is one already made; every later read (after a lost race) is fresh."""
    unread = [session]

    async def read() -> PairingSession | None:
        return unread.pop() if unread else await load()

    return read


def _push_time(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


async def on_device_bound(
    event: DeviceBound,
    *,
    sessions: SessionRepository,
    owners: DeviceOwners,
    binding_modes: BindingModes,
) -> PairingSession | None:
    """A `bindUser` / `deviceBindSpace` push: apply it to the session its token names, then remember the
    device's owner. The owner is recorded after the session write, so a redelivery after a crash in between
    still sees the previous owner (and finds the activation already applied). The two reads (owner,
    session) go out together: a push waits for one database round trip before its write, not two."""
    at = _push_time(event.origin.push_time_ms)
    token = event.pairing_token
    stored: PairingSession | None = None
    if token:
        previous, session = await asyncio.gather(
            owners.owner_of(event.device_id, at), sessions.by_token(token)
        )
        fact = Activation(
            device_id=event.device_id,
            at=at,
            source=FactSource.PUSH,
            product_id=event.product_id,
            previous_owner_uid=previous,
            binding_mode=binding_modes.binding_mode(event.product_id),
        )
        stored = await _apply(
            sessions,
            _read_first(session, lambda: sessions.by_token(token)),
            lambda s: rules.record_activation(s, fact),
        )
    await owners.record_bound(event.device_id, event.owner_uid, at)
    return stored


async def on_device_released(event: DeviceRemoved | DeviceUnbound, *, owners: DeviceOwners) -> None:
    """The device left its owner: a later bind to someone else is not a rebind from that owner."""
    await owners.record_released(event.device_id, _push_time(event.origin.push_time_ms), event.owner_uid)


async def poll_token_result(
    session_id: str,
    *,
    sessions: SessionRepository,
    tuya: TuyaPairing,
    owners: DeviceOwners,
    binding_modes: BindingModes,
    clock: Clock,
) -> PairingSession | None:
    """Ask Tuya which devices activated with (or failed on) the session's token and apply every answer."""
    session = await sessions.get(session_id)
    if session is None or session.ended:
        return session
    result = await tuya.token_result(session.token)
    now = clock.now()
    previous = {d.device_id: await owners.owner_of(d.device_id) for d in result.success}
    activations = [
        Activation(
            device_id=d.device_id,
            at=now,
            source=FactSource.POLL,
            product_id=d.product_id,
            name=d.name,
            previous_owner_uid=previous[d.device_id],
            binding_mode=binding_modes.binding_mode(d.product_id),
        )
        for d in result.success
    ]
    # the failed list names no product: a code 113 is read as strong binding (the only mode Tuya refuses)
    failures = [
        ActivationFailure(
            code=f.code, at=now, source=FactSource.POLL, device_id=f.device_id, name=f.name, message=f.message
        )
        for f in result.failed
    ]
    return await _apply(
        sessions,
        lambda: sessions.get(session_id),
        lambda s: rules.record_token_result(s, activations, failures),
    )


async def poll_active_sessions(
    *,
    sessions: SessionRepository,
    tuya: TuyaPairing,
    owners: DeviceOwners,
    binding_modes: BindingModes,
    clock: Clock,
    batch: int = 100,
    concurrency: int = 1,
) -> int:
    """One round of polling over every active session, `concurrency` sessions at a time (the OpenAPI
    client paces the calls to Tuya's limit); returns how many were polled. A Tuya error on one session is
    logged and the round goes on (the next round asks again)."""
    gate = asyncio.Semaphore(concurrency)

    async def poll(session: PairingSession) -> bool:
        async with gate:
            try:
                await poll_token_result(
                    session.session_id,
                    sessions=sessions,
                    tuya=tuya,
                    owners=owners,
                    binding_modes=binding_modes,
                    clock=clock,
                )
            except TuyaError as e:
                log.warning(
                    "token result poll failed", extra={"session_id": session.session_id, "error": repr(e)}
                )
                return False
            return True

    polled, after = 0, None
    while True:
        page = await sessions.active(batch, after_id=after)
        polled += sum(await asyncio.gather(*(poll(s) for s in page)))
        if len(page) < batch:
            return polled
        after = page[-1].session_id


LastPoll = Callable[[str], Awaitable[object]]


async def close_expired_sessions(
    *,
    sessions: SessionRepository,
    clock: Clock,
    settle: timedelta,
    batch: int = 100,
    last_poll: LastPoll | None = None,
    give_up_after: timedelta = timedelta(minutes=5),
) -> int:
    """End every active session whose token expired at least `settle` ago; returns how many ended.

    With `last_poll`, each session's token result is read once more right before it closes, so a failure
    only Tuya's result reports is never missed however far behind the polling rounds are. If that read
    fails (Tuya unreachable), the session stays open for a later sweep, at most `give_up_after` past
    its settle time."""
    now = clock.now()
    closed = 0
    for session in await sessions.expiring(now - settle, batch):
        sid = session.session_id
        if last_poll is not None:
            try:
                await last_poll(sid)
            except TuyaError as e:
                if now < session.expires_at + settle + give_up_after:
                    log.warning(
                        "last poll before closing failed", extra={"session_id": sid, "error": repr(e)}
                    )
                    continue
        stored = await _apply(
            sessions, _loader(sessions, sid), partial(rules.close_if_expired, now=now, settle=settle)
        )
        closed += stored is not None and stored.ended and stored.version > session.version
    return closed


async def remove_unexpected_devices(
    *, sessions: SessionRepository, tuya: TuyaPairing, batch: int = 100
) -> int:
    """Remove again the devices of unexpected products whose session's policy says so. A transient Tuya
    failure leaves the removal pending for the next round; a refusal records it as failed."""
    removed = 0
    for session in await sessions.with_pending_removals(batch):
        sid = session.session_id
        for outcome in session.pending_removals():
            device_id = outcome.device_id or outcome.key
            try:
                ok = await tuya.remove_device(device_id)
            except TuyaError as e:
                if _retryable(e):
                    continue
                ok = False
            await _apply(
                sessions,
                _loader(sessions, sid),
                partial(rules.record_removal, device_id=device_id, removed=ok),
            )
            removed += ok
    return removed


def _retryable(error: TuyaError) -> bool:
    return bool(getattr(error, "retryable", False))


async def on_device_event(
    event: DeviceEvent,
    *,
    sessions: SessionRepository,
    owners: DeviceOwners,
    binding_modes: BindingModes,
) -> PairingSession | None:
    """One event of ingest's device topic: bindings feed sessions and owners, releases feed owners; pairing
    keeps nothing of the rest (status reports, presence, renames, OTA)."""
    data = event.data
    if isinstance(data, DeviceBound):
        return await on_device_bound(data, sessions=sessions, owners=owners, binding_modes=binding_modes)
    if isinstance(data, DeviceRemoved | DeviceUnbound):
        await on_device_released(data, owners=owners)
    return None
