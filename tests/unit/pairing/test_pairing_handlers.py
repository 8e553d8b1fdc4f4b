"""pairing's handlers against in-memory fakes of the ports: idempotent commands, push and poll outcomes."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest
from pydantic import SecretStr

from fleet_contracts.device import DeviceBound, DeviceRemoved, TuyaOrigin
from fleet_contracts.pairing import (
    DevicePaired,
    LateActivation,
    PairingFailed,
    PairingMode,
    PairingSessionEnded,
    PairingTokenIssued,
    PreviousOwnerNotified,
    UnexpectedProductPolicy,
)
from fleet_pairing.domain.commands import CancelSession, CheckToken, OpenSession
from fleet_pairing.domain.credentials import WifiCredentials
from fleet_pairing.domain.session import (
    BindingMode,
    InvalidSession,
    OutcomeKind,
    PairingSession,
    Removal,
    SessionAlreadyEnded,
    SessionRequest,
    SessionState,
    TokenRefused,
)
from fleet_pairing.ports import ActivatedDevice, FailedDevice, TokenResult
from fleet_pairing.service_layer import handlers
from fleet_pairing.service_layer.handlers import OpenedSession, SessionNotFound, WriteContention
from fleet_shared.tuya.errors import TuyaTransportError
from tests.unit.pairing.fakes import (
    T0,
    FakeBindingModes,
    FakeClock,
    FakeOwners,
    FakeSessions,
    FakeTuya,
    SequentialIds,
    events_of,
    tuya_error,
)

pytestmark = pytest.mark.unit

PASSWORD = "s3cret-Wi-Fi-pw"
OWNER = "eu-owner"


class World:
    def __init__(self) -> None:
        self.sessions = FakeSessions()
        self.tuya = FakeTuya()
        self.clock = FakeClock()
        self.ids = SequentialIds()
        self.owners = FakeOwners()
        self.modes = FakeBindingModes({"p-medium": BindingMode.MEDIUM, "p-weak": BindingMode.WEAK})

    async def open(
        self, mode: PairingMode = PairingMode.EZ, wifi: bool = False, **kw: object
    ) -> OpenedSession:
        fields: dict[str, object] = {"owner_uid": OWNER, "home_id": "h1", "mode": mode, "time_zone_id": "UTC"}
        if mode in (PairingMode.BLE, PairingMode.COMBO):
            fields["device_uuids"] = ("uuid-1",)
        request = SessionRequest(**{**fields, **kw})  # type: ignore[arg-type]
        credentials = WifiCredentials('Café "home"', SecretStr(PASSWORD)) if wifi else None
        return await handlers.open_session(
            OpenSession(request, credentials),
            sessions=self.sessions,
            tuya=self.tuya,
            clock=self.clock,
            ids=self.ids,
        )

    async def push(
        self,
        device: str,
        token: str | None,
        *,
        owner: str = OWNER,
        product: str | None = None,
        at_s: float = 30,
    ) -> None:
        event = DeviceBound(
            device_id=device,
            product_id=product,
            owner_uid=owner,
            home_id="h1",
            pairing_token=token,
            origin=TuyaOrigin(
                protocol=20, biz_code="bindUser", push_time_ms=int((T0.timestamp() + at_s) * 1000)
            ),
        )
        await handlers.on_device_bound(
            event, sessions=self.sessions, owners=self.owners, binding_modes=self.modes
        )

    async def poll(self, session_id: str) -> None:
        await handlers.poll_token_result(
            session_id,
            sessions=self.sessions,
            tuya=self.tuya,
            owners=self.owners,
            binding_modes=self.modes,
            clock=self.clock,
        )


@pytest.fixture
def world() -> World:
    return World()


async def test_qr_session_returns_token_payload_and_stores_no_secret(world: World) -> None:
    opened = await world.open(PairingMode.QR, wifi=True)
    assert not opened.replayed
    assert opened.assembled_token is not None
    assert opened.assembled_token.get_secret_value() == "AYtok00001sec1"
    assert opened.qr_payload is not None
    assert opened.qr_payload.get_secret_value() == (
        '{"s":"Café \\"home\\"","p":"' + PASSWORD + '","t":"AYtok00001sec1"}'
    )
    assert opened.ble_token is None
    assert world.tuya.calls == [{"owner_uid": OWNER, "home_id": "h1", "mode": PairingMode.QR, "uuid": None}]
    stored = world.sessions.rows["s1"]
    assert (stored.token, stored.region, stored.version) == ("tok00001", "AY", 1)
    everything = repr(stored) + repr(world.sessions.events) + repr(opened)
    for secret in (PASSWORD, "sec1", "AYtok00001sec1"):
        assert secret not in everything
    [issued] = world.sessions.events
    assert isinstance(issued, PairingTokenIssued)
    assert issued.expires_at == T0 + timedelta(minutes=10)


async def test_ble_and_combo_sessions_get_the_ble_token_and_send_the_uuid(world: World) -> None:
    for mode in (PairingMode.BLE, PairingMode.COMBO):
        opened = await world.open(mode)
        assert opened.ble_token is not None
        assert opened.ble_token.get_secret_value() == f"tok0000{world.tuya.n}"
        assert world.tuya.calls[-1]["uuid"] == "uuid-1"


async def test_wifi_is_required_for_qr_and_refused_elsewhere(world: World) -> None:
    with pytest.raises(InvalidSession, match="wifi"):
        await world.open(PairingMode.QR)
    with pytest.raises(InvalidSession, match="wifi"):
        await world.open(PairingMode.EZ, wifi=True)
    assert world.tuya.calls == []
    assert world.sessions.rows == {}
    command = OpenSession(
        SessionRequest(owner_uid=OWNER, home_id="h", mode=PairingMode.QR, time_zone_id="UTC"),
        WifiCredentials("x", SecretStr(PASSWORD)),
    )
    assert PASSWORD not in repr(command)


async def test_tuyas_missing_expire_time_falls_back_to_ten_minutes(world: World) -> None:
    world.tuya.lifetime = None
    opened = await world.open()
    assert opened.session.expires_at == T0 + timedelta(minutes=10)


async def test_a_repeated_idempotency_key_returns_the_first_session_without_secrets(world: World) -> None:
    first = await world.open(idempotency_key="k1")
    again = await world.open(idempotency_key="k1")
    assert again.replayed
    assert again.session.session_id == first.session.session_id
    assert again.assembled_token is None
    assert world.tuya.n == 1
    other_owner = await world.open(idempotency_key="k1", owner_uid="someone-else")
    assert not other_owner.replayed


async def test_concurrent_requests_with_one_key_open_one_session(world: World) -> None:
    results = await asyncio.gather(*(world.open(idempotency_key="k1") for _ in range(5)))
    assert len(world.sessions.rows) == 1
    assert len({r.session.session_id for r in results}) == 1
    assert sum(not r.replayed for r in results) == 1
    assert world.tuya.n == 5  # all asked Tuya before any stored: the losers lost on the unique key


async def test_push_pairs_the_device_and_a_duplicate_push_changes_nothing(world: World) -> None:
    opened = await world.open(expected_devices=2)
    token = opened.session.token
    await world.push("d1", token)
    await world.push("d1", token)
    stored = world.sessions.rows[opened.session.session_id]
    assert stored.count(OutcomeKind.PAIRED) == 1
    assert stored.version == 2
    assert len(events_of(world.sessions, DevicePaired)) == 1


async def test_a_push_without_a_known_token_only_updates_owners(world: World) -> None:
    await world.push("d1", None, owner="a")
    await world.push("d2", "unknown-token", owner="b")
    assert world.owners.owners["d1"][0] == "a"
    assert world.owners.owners["d2"][0] == "b"
    assert world.sessions.events == []


async def test_poll_then_push_agree_and_the_session_succeeds(world: World) -> None:
    opened = await world.open(expected_devices=2)
    sid, token = opened.session.session_id, opened.session.token
    world.tuya.results[token] = TokenResult(
        [ActivatedDevice("d1", "p1", "Plug")], [FailedDevice("3", "d9", "Bulb")]
    )
    world.clock.advance(seconds=20)
    await world.poll(sid)
    await world.poll(sid)  # the same answer again: nothing new
    await world.push("d1", token, product="p1")
    await world.push("d2", token, at_s=40)
    stored = world.sessions.rows[sid]
    assert stored.state is SessionState.SUCCEEDED
    assert {o.key: o.kind for o in stored.outcomes} == {
        "d1": OutcomeKind.PAIRED,
        "d9": OutcomeKind.FAILED,
        "d2": OutcomeKind.PAIRED,
    }
    assert len(events_of(world.sessions, DevicePaired)) == 2
    assert len(events_of(world.sessions, PairingFailed)) == 1
    [ended] = events_of(world.sessions, PairingSessionEnded)
    assert isinstance(ended, PairingSessionEnded)
    assert ended.state is SessionState.SUCCEEDED


async def test_medium_rebind_from_a_known_previous_owner_notifies_them(world: World) -> None:
    await world.push("d1", None, owner="old-owner", at_s=1)
    opened = await world.open()
    await world.push("d1", opened.session.token, product="p-medium")
    [notified] = events_of(world.sessions, PreviousOwnerNotified)
    assert isinstance(notified, PreviousOwnerNotified)
    assert notified.previous_owner_uid == "old-owner"
    assert world.owners.owners["d1"][0] == OWNER


async def test_a_removed_device_has_no_previous_owner(world: World) -> None:
    await world.push("d1", None, owner="old-owner", at_s=1)
    await handlers.on_device_released(
        DeviceRemoved(
            device_id="d1",
            origin=TuyaOrigin(protocol=20, biz_code="delete", push_time_ms=int(T0.timestamp() * 1000) + 2000),
        ),
        owners=world.owners,
    )
    opened = await world.open()
    await world.push("d1", opened.session.token, product="p-medium")
    assert events_of(world.sessions, PreviousOwnerNotified) == []


async def test_a_rebind_seen_as_a_release_and_a_binding_of_one_instant_names_the_previous_owner(
    world: World,
) -> None:
    # Tuya moves a medium-bound device: `delete` from the previous owner, then `bindUser`, same push time
    opened = await world.open()
    await handlers.on_device_released(
        DeviceRemoved(
            device_id="d1",
            owner_uid="old-owner",
            origin=TuyaOrigin(
                protocol=20, biz_code="delete", push_time_ms=int(T0.timestamp() * 1000) + 30_000
            ),
        ),
        owners=world.owners,
    )
    await world.push("d1", opened.session.token, product="p-medium", at_s=30)
    [notified] = events_of(world.sessions, PreviousOwnerNotified)
    assert isinstance(notified, PreviousOwnerNotified)
    assert notified.previous_owner_uid == "old-owner"
    assert world.owners.owners["d1"][0] == OWNER  # the binding of the same instant wins over the release


async def test_cancel_then_a_late_push_is_flagged(world: World) -> None:
    opened = await world.open()
    sid = opened.session.session_id
    world.clock.advance(seconds=10)
    cancelled = await handlers.cancel_session(CancelSession(sid), sessions=world.sessions, clock=world.clock)
    assert cancelled.state is SessionState.CANCELLED
    again = await handlers.cancel_session(CancelSession(sid), sessions=world.sessions, clock=world.clock)
    assert again.version == cancelled.version
    with pytest.raises(TokenRefused, match="cancelled"):
        await handlers.check_token(
            CheckToken(opened.session.token), sessions=world.sessions, clock=world.clock
        )
    await world.push("d1", opened.session.token, at_s=60)
    assert len(events_of(world.sessions, LateActivation)) == 1
    assert world.sessions.rows[sid].state is SessionState.CANCELLED


async def test_cancel_of_unknown_or_finished_sessions_is_refused(world: World) -> None:
    with pytest.raises(SessionNotFound):
        await handlers.cancel_session(CancelSession("nope"), sessions=world.sessions, clock=world.clock)
    opened = await world.open()
    await world.push("d1", opened.session.token)
    with pytest.raises(SessionAlreadyEnded):
        await handlers.cancel_session(
            CancelSession(opened.session.session_id), sessions=world.sessions, clock=world.clock
        )


async def test_check_token_refuses_expired_and_unknown_tokens(world: World) -> None:
    opened = await world.open()
    token = opened.session.token
    await handlers.check_token(CheckToken(token), sessions=world.sessions, clock=world.clock)
    world.clock.advance(minutes=10)
    with pytest.raises(TokenRefused, match="expired"):
        await handlers.check_token(CheckToken(token), sessions=world.sessions, clock=world.clock)
    with pytest.raises(SessionNotFound):
        await handlers.check_token(CheckToken("other"), sessions=world.sessions, clock=world.clock)


async def test_the_expiry_sweep_closes_only_sessions_past_the_settle_window(world: World) -> None:
    first = await world.open()
    world.clock.advance(minutes=5)
    second = await world.open()
    world.clock.advance(minutes=5, seconds=14)
    settle = timedelta(seconds=15)
    assert (
        await handlers.close_expired_sessions(sessions=world.sessions, clock=world.clock, settle=settle) == 0
    )
    world.clock.advance(seconds=1)
    assert (
        await handlers.close_expired_sessions(sessions=world.sessions, clock=world.clock, settle=settle) == 1
    )
    assert world.sessions.rows[first.session.session_id].state is SessionState.EXPIRED
    assert world.sessions.rows[second.session.session_id].state is SessionState.ACTIVE
    assert (
        await handlers.close_expired_sessions(sessions=world.sessions, clock=world.clock, settle=settle) == 0
    )


async def test_a_session_closes_only_after_a_last_look_at_tuyas_result(world: World) -> None:
    opened = await world.open()
    sid = opened.session.session_id
    world.tuya.results[opened.session.token] = TokenResult(success=[], failed=[FailedDevice("106", "d9")])
    settle = timedelta(seconds=15)
    world.clock.advance(minutes=10, seconds=15)

    async def last_poll(session_id: str) -> None:
        await world.poll(session_id)

    async def unreachable(session_id: str) -> None:
        raise TuyaTransportError("connection refused")

    closing = {"sessions": world.sessions, "clock": world.clock, "settle": settle}
    assert await handlers.close_expired_sessions(**closing, last_poll=unreachable) == 0  # tried again later
    assert await handlers.close_expired_sessions(**closing, last_poll=last_poll) == 1
    stored = world.sessions.rows[sid]
    assert stored.state is SessionState.FAILED  # the failure only the token result knew
    assert stored.outcomes[0].failure is not None


async def test_an_unreachable_tuya_delays_closing_only_so_long(world: World) -> None:
    opened = await world.open()

    async def unreachable(session_id: str) -> None:
        raise TuyaTransportError("connection refused")

    world.clock.advance(minutes=16)
    closed = await handlers.close_expired_sessions(
        sessions=world.sessions, clock=world.clock, settle=timedelta(seconds=15), last_poll=unreachable
    )
    assert closed == 1
    assert world.sessions.rows[opened.session.session_id].state is SessionState.EXPIRED


async def test_a_lost_race_is_retried_from_a_fresh_read(world: World) -> None:
    opened = await world.open(expected_devices=2)
    world.sessions.lost_races = 2
    await world.push("d1", opened.session.token)
    stored = world.sessions.rows[opened.session.session_id]
    assert stored.count(OutcomeKind.PAIRED) == 1
    assert stored.version == 4  # two foreign writes, then ours
    world.sessions.lost_races = 100
    with pytest.raises(WriteContention):
        await world.push("d2", opened.session.token)


async def test_polling_goes_on_past_a_tuya_error(world: World) -> None:
    a = await world.open()
    b = await world.open()
    world.tuya.result_errors[a.session.token] = tuya_error(1111)
    world.tuya.results[b.session.token] = TokenResult([ActivatedDevice("d1")], [])
    polled = await handlers.poll_active_sessions(
        sessions=world.sessions,
        tuya=world.tuya,
        owners=world.owners,
        binding_modes=world.modes,
        clock=world.clock,
        batch=1,
    )
    assert polled == 1
    assert world.sessions.rows[b.session.session_id].state is SessionState.SUCCEEDED


async def test_unexpected_products_are_removed_when_the_policy_says_so(world: World) -> None:
    opened = await world.open(
        expected_devices=3,
        allowed_products=frozenset({"p-ok"}),
        unexpected_policy=UnexpectedProductPolicy.REMOVE,
    )
    token, sid = opened.session.token, opened.session.session_id
    await world.push("d1", token, product="p-bad")
    await world.push("d2", token, product="p-bad", at_s=31)
    await world.push("d3", token, product="p-bad", at_s=32)
    world.tuya.removal_errors = [tuya_error(1111), tuya_error(1106)]  # busy (retry later), then refused
    assert await handlers.remove_unexpected_devices(sessions=world.sessions, tuya=world.tuya) == 1
    outcomes = {o.key: o.removal for o in world.sessions.rows[sid].outcomes}
    assert outcomes == {"d1": Removal.PENDING, "d2": Removal.FAILED, "d3": Removal.DONE}
    assert await handlers.remove_unexpected_devices(sessions=world.sessions, tuya=world.tuya) == 1
    assert world.sessions.rows[sid].outcome("d1").removal is Removal.DONE  # type: ignore[union-attr]
    assert world.tuya.removed == ["d3", "d1"]
    assert await handlers.remove_unexpected_devices(sessions=world.sessions, tuya=world.tuya) == 0


@dataclass
class MeetingOwners(FakeOwners):
    """`owner_of` returns only once the session read has started too (an `asyncio.Barrier` of two)."""

    meet: asyncio.Barrier = field(default_factory=lambda: asyncio.Barrier(2))

    async def owner_of(self, device_id: str, at: datetime | None = None) -> str | None:
        await self.meet.wait()
        return await super().owner_of(device_id, at)


@dataclass
class MeetingSessions(FakeSessions):
    meet: asyncio.Barrier = field(default_factory=lambda: asyncio.Barrier(2))

    async def by_token(self, token: str) -> PairingSession | None:
        await self.meet.wait()
        return await super().by_token(token)


async def test_a_push_reads_the_owner_and_its_session_together(world: World) -> None:
    opened = await world.open()
    meet = asyncio.Barrier(2)  # read one after the other, neither read ever returns
    sessions = MeetingSessions(rows=world.sessions.rows, meet=meet)
    event = DeviceBound(
        device_id="d1",
        owner_uid=OWNER,
        home_id="h1",
        pairing_token=opened.session.token,
        origin=TuyaOrigin(protocol=20, biz_code="bindUser", push_time_ms=int(T0.timestamp() * 1000) + 30_000),
    )
    stored = await asyncio.wait_for(
        handlers.on_device_bound(
            event, sessions=sessions, owners=MeetingOwners(meet=meet), binding_modes=world.modes
        ),
        timeout=5,
    )
    assert stored is not None
    assert stored.count(OutcomeKind.PAIRED) == 1
    assert stored.version == 2
