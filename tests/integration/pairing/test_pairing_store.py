"""pairing's Mongo stores on the real MongoDB-wire server: conditional writes under concurrency, the outbox in
the same write, idempotent re-application, unique idempotency keys and tokens, queries by indexed fields."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from motor.motor_asyncio import AsyncIOMotorClient
from pydantic import SecretStr

from fleet_contracts import topics
from fleet_contracts.outbox import OutboxEntry
from fleet_contracts.pairing import PairingMode, UnexpectedProductPolicy
from fleet_pairing.adapters.events import EventEncoder
from fleet_pairing.adapters.mongo import (
    OUTBOX_AT,
    DeviceOwnerStore,
    SessionStore,
    session_to_doc,
    unrelayed_filter,
)
from fleet_pairing.adapters.outbox import OutboxRelay
from fleet_pairing.domain.commands import OpenSession
from fleet_pairing.domain.credentials import WifiCredentials
from fleet_pairing.domain.session import (
    Activation,
    FactSource,
    SessionRequest,
    SessionState,
    open_session,
    record_activation,
)
from fleet_pairing.ports import IdempotencyConflict
from fleet_pairing.service_layer import handlers
from tests.integration.status.explain import answered_from_index, plan
from tests.support import Stack, until
from tests.unit.pairing.fakes import FakeBindingModes, FakeClock, FakeTuya, SequentialIds

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
PASSWORD = "integration-Wi-Fi-secret"


@dataclass
class RecordingPublisher:
    published: list[OutboxEntry] = field(default_factory=list)
    fail: bool = False

    async def publish(self, entries: Sequence[OutboxEntry]) -> None:
        if self.fail:
            raise ConnectionError("broker down")
        self.published.extend(entries)


@dataclass
class Db:
    client: AsyncIOMotorClient[dict[str, Any]]
    name: str

    @property
    def db(self) -> Any:
        return self.client[self.name]


@pytest.fixture
async def db(stack: Stack, unique: str) -> AsyncIterator[Db]:
    client: AsyncIOMotorClient[dict[str, Any]] = AsyncIOMotorClient(stack.mongodb_uri, tz_aware=True)
    handle = Db(client, f"pairing_store_{unique}")
    yield handle
    await client.drop_database(handle.name)
    client.close()


def make_store(db: Db, relay: OutboxRelay | None = None) -> SessionStore:
    return SessionStore(
        db.db, EventEncoder("tenant1", "eu"), clock=lambda: T0, relay=relay.relay if relay else None
    )


def request(key: str | None = None, owner: str = "owner1", **kw: Any) -> SessionRequest:
    return SessionRequest(
        owner_uid=owner, home_id="h1", mode=PairingMode.EZ, time_zone_id="UTC", idempotency_key=key, **kw
    )


def opened(sid: str, token: str, **kw: Any) -> Any:
    t = open_session(sid, request(**kw), region="AY", token=token, lifetime=timedelta(minutes=10), now=T0)
    return replace(t, session=replace(t.session, version=1))


async def test_a_session_round_trips_with_its_events_in_the_same_write(db: Db) -> None:
    store = make_store(db)
    await store.ensure_indexes()
    t = opened(
        "s1",
        "tok1",
        expected_devices=2,
        allowed_products=frozenset({"p1"}),
        unexpected_policy=UnexpectedProductPolicy.REMOVE,
    )
    await store.add(t)
    loaded = await store.get("s1")
    assert loaded == t.session
    assert await store.by_token("tok1") == t.session
    [left] = await store.unrelayed(10)
    assert (left.session_id, left.version) == ("s1", 1)
    [entry] = left.entries
    assert entry.topic == topics.PAIRING_EVENTS.name
    assert entry.key == "tok1"
    event = topics.PAIRING_EVENTS.decode(entry.body)
    assert event.type == "pairing.token.issued.v1"
    assert event.data.session_id == "s1"

    step = record_activation(
        t.session, Activation("d1", T0 + timedelta(seconds=5), FactSource.PUSH, product_id="p9")
    )
    assert await store.save(replace(step, session=replace(step.session, version=2)), 1)
    doc = await db.db["sessions"].find_one({"_id": "s1"})
    assert doc["version"] == 2
    assert doc["pending_removals"] is True
    assert [topics.PAIRING_EVENTS.decode(e["body"]).type for e in doc["outbox"]] == [
        "pairing.token.issued.v1",
        "pairing.device.unexpected_product.v1",
    ]
    reloaded = await store.get("s1")
    assert reloaded is not None
    assert reloaded.outcome("d1") == step.session.outcome("d1")
    assert [s.session_id for s in await store.with_pending_removals(10)] == ["s1"]


async def test_a_stale_version_loses_and_writes_nothing(db: Db) -> None:
    store = make_store(db)
    t = opened("s1", "tok1", expected_devices=3)
    await store.add(t)
    a = record_activation(t.session, Activation("d1", T0, FactSource.PUSH))
    b = record_activation(t.session, Activation("d2", T0, FactSource.PUSH))
    assert await store.save(replace(a, session=replace(a.session, version=2)), 1)
    assert not await store.save(replace(b, session=replace(b.session, version=2)), 1)
    stored = await store.get("s1")
    assert stored is not None
    assert [o.key for o in stored.outcomes] == ["d1"]
    [left] = await store.unrelayed(10)
    assert len(left.entries) == 2  # issued + d1's paired; nothing of the losing write


async def test_concurrent_pushes_each_apply_exactly_once(db: Db, unique: str) -> None:
    store = make_store(db)
    await store.ensure_indexes()
    t = opened("s1", "tok1", expected_devices=20)
    await store.add(t)
    from fleet_contracts.device import DeviceBound, TuyaOrigin
    from tests.unit.pairing.fakes import FakeOwners

    owners = FakeOwners()
    modes = FakeBindingModes()

    async def push(device: str) -> None:
        event = DeviceBound(
            device_id=device,
            owner_uid="owner1",
            pairing_token="tok1",
            origin=TuyaOrigin(
                protocol=20, biz_code="bindUser", push_time_ms=int(T0.timestamp() * 1000) + 1000
            ),
        )
        await handlers.on_device_bound(event, sessions=store, owners=owners, binding_modes=modes)

    devices = [f"d{i}" for i in range(20)]
    await asyncio.gather(*(push(d) for d in devices + devices))  # every push twice, all at once
    stored = await store.get("s1")
    assert stored is not None
    assert sorted(o.key for o in stored.outcomes) == sorted(devices)
    assert stored.state is SessionState.SUCCEEDED
    [left] = await store.unrelayed(10)
    types = [topics.PAIRING_EVENTS.decode(e.body).type for e in left.entries]
    assert types.count("pairing.device.paired.v1") == 20
    assert types.count("pairing.session.ended.v1") == 1
    assert len({e.id for e in left.entries}) == len(left.entries)


async def test_idempotency_keys_and_tokens_are_unique(db: Db) -> None:
    store = make_store(db)
    await store.ensure_indexes()
    await store.add(opened("s1", "tok1", key="k1"))
    with pytest.raises(IdempotencyConflict) as info:
        await store.add(opened("s2", "tok2", key="k1"))
    assert info.value.existing.session_id == "s1"
    await store.add(opened("s3", "tok3", key="k1", owner="owner2"))  # keys are scoped per owner
    await store.add(opened("s4", "tok4"))  # no key
    await store.add(opened("s5", "tok5"))
    found = await store.by_idempotency_key("owner1", "k1")
    assert found is not None
    assert found.session_id == "s1"
    assert await store.get("s2") is None


async def test_open_session_handler_stores_no_secret(db: Db) -> None:
    store = make_store(db)
    await store.ensure_indexes()
    tuya = FakeTuya()
    command = OpenSession(
        SessionRequest(
            owner_uid="o", home_id="h", mode=PairingMode.QR, time_zone_id="UTC", idempotency_key="k"
        ),
        WifiCredentials("home", SecretStr(PASSWORD)),
    )
    result = await handlers.open_session(
        command, sessions=store, tuya=tuya, clock=FakeClock(), ids=SequentialIds()
    )
    assert result.qr_payload is not None
    raw = orjson.dumps([doc async for doc in db.db["sessions"].find({})], default=str)
    for secret in (PASSWORD, "sec1", "AYtok00001sec1"):
        assert secret.encode() not in raw
    replay = await handlers.open_session(
        command, sessions=store, tuya=tuya, clock=FakeClock(), ids=SequentialIds()
    )
    assert replay.replayed
    assert tuya.n == 1


async def test_the_relay_publishes_and_clears_and_the_sweep_catches_up(db: Db) -> None:
    publisher = RecordingPublisher(fail=True)
    relay_store = make_store(db)
    relay = OutboxRelay(relay_store, publisher)
    store = make_store(db, relay)
    t = opened("s1", "tok1", expected_devices=2)
    await store.add(t)  # the broker is down: the event stays in the outbox
    assert publisher.published == []
    assert len((await store.unrelayed(10))[0].entries) == 1

    publisher.fail = False
    step = record_activation(t.session, Activation("d1", T0, FactSource.PUSH))
    assert await store.save(replace(step, session=replace(step.session, version=2)), 1)
    # the next write relays what the outage left behind first, then its own event: in order
    assert [topics.PAIRING_EVENTS.decode(e.body).type for e in publisher.published] == [
        "pairing.token.issued.v1",
        "pairing.device.paired.v1",
    ]
    assert await store.unrelayed(10) == []
    assert await relay.sweep() == 0

    publisher.fail = True
    await store.add(opened("s2", "tok2"))
    publisher.fail = False
    assert await relay.sweep() == 1  # a session with no further write: the sweep catches up
    assert topics.PAIRING_EVENTS.decode(publisher.published[-1].body).data.token == "tok2"
    assert await store.unrelayed(10) == []


class CountingStore(SessionStore):
    """Counts the clearing commands and how many sessions each one clears."""

    clears: list[int]

    async def clear_outboxes(self, relayed: Sequence[tuple[str, int]]) -> None:
        self.clears.append(len(relayed))
        await super().clear_outboxes(relayed)


@dataclass
class GatedPublisher(RecordingPublisher):
    """Holds every publish until `count` of them wait: the relays of a burst of writes then clear together."""

    count: int = 1
    gate: asyncio.Event = field(default_factory=asyncio.Event)

    async def publish(self, entries: Sequence[OutboxEntry]) -> None:
        self.published.extend(entries)
        if len(self.published) >= self.count:
            self.gate.set()
        await self.gate.wait()


async def test_relays_of_concurrent_writes_clear_their_entries_in_shared_commands(db: Db) -> None:
    publisher = GatedPublisher(count=20)
    relay_store = CountingStore(db.db, EventEncoder("tenant1", "eu"), clock=lambda: T0)
    relay_store.clears = []
    relay = OutboxRelay(relay_store, publisher, clear_batch=8)
    store = make_store(db, relay)
    await asyncio.gather(*(store.add(opened(f"s{i}", f"tok{i}")) for i in range(20)))
    assert len(publisher.published) == 20
    assert await store.unrelayed(100) == []  # every entry cleared once all the adds returned
    assert sum(relay_store.clears) == 20
    assert len(relay_store.clears) < 20
    assert max(relay_store.clears) <= 8
    with pytest.raises(ValueError, match="clear_batch"):
        OutboxRelay(relay_store, publisher, clear_batch=65)


async def test_a_push_finds_its_session_by_token_from_an_index(db: Db) -> None:
    """Every binding push looks its session up by token: never a read of the whole collection."""
    store = make_store(db)
    await store.ensure_indexes()
    for i in range(30):
        await store.add(opened(f"s{i}", f"tok{i}"))
    reply = await plan(db.db, "sessions", {"token": "tok17"}, limit=1)
    assert answered_from_index(reply), reply
    found = await store.by_token("tok17")
    assert found is not None
    assert found.session_id == "s17"
    assert await store.by_token("tok-unknown") is None


async def test_background_relays_return_at_once_drain_on_shutdown_and_the_sweep_leaves_them(db: Db) -> None:
    publisher = GatedPublisher(count=3)
    relay = OutboxRelay(make_store(db), publisher)
    store = SessionStore(db.db, EventEncoder("tenant1", "eu"), clock=lambda: T0, relay=relay.relay_later)
    for i in range(2):
        await store.add(opened(f"s{i}", f"tok{i}"))  # returns before its relay has even started
    await until(lambda: len(publisher.published) == 2, 5, lambda: str(publisher.published))
    assert len(await store.unrelayed(10)) == 2
    assert await relay.sweep(grace=timedelta(0)) == 0  # both relays under way: nothing published twice
    assert len(publisher.published) == 2

    await store.add(opened("s2", "tok2"))  # the third publish opens the gate
    await relay.drain()
    assert len(publisher.published) == 3
    assert await store.unrelayed(10) == []


async def test_an_abandoned_background_relay_leaves_its_events_for_the_next_sweep(db: Db) -> None:
    publisher = GatedPublisher(count=2)
    relay = OutboxRelay(make_store(db), publisher)
    store = SessionStore(db.db, EventEncoder("tenant1", "eu"), clock=lambda: T0, relay=relay.relay_later)
    await store.add(opened("s0", "tok0"))
    await relay.abandon()  # stopping: the publish never finished
    assert len(await store.unrelayed(10)) == 1

    publisher.gate.set()
    after = OutboxRelay(make_store(db), publisher)  # the next process
    assert await after.sweep() == 1
    assert await store.unrelayed(10) == []


class HeldClearStore(SessionStore):
    """Each clearing write waits for its own gate."""

    gates: list[asyncio.Event]
    batches: list[int]

    async def clear_outboxes(self, relayed: Sequence[tuple[str, int]]) -> None:
        gate = asyncio.Event()
        self.gates.append(gate)
        self.batches.append(len(relayed))
        await gate.wait()
        await super().clear_outboxes(relayed)


async def test_a_cancelled_clearing_write_fails_the_relays_it_held_instead_of_leaving_them_waiting(
    db: Db,
) -> None:
    store = make_store(db)
    held = HeldClearStore(db.db, EventEncoder("tenant1", "eu"), clock=lambda: T0)
    held.gates, held.batches = [], []
    relay = OutboxRelay(held, RecordingPublisher())
    for i in range(3):
        await store.add(opened(f"s{i}", f"tok{i}"))
    outboxes = {left.session_id: left.entries for left in await store.unrelayed(10)}
    first = asyncio.create_task(relay.relay("s0", 1, outboxes["s0"]))
    await asyncio.sleep(0.05)  # its clearing write is under way
    a = asyncio.create_task(relay.relay("s1", 1, outboxes["s1"]))
    b = asyncio.create_task(relay.relay("s2", 1, outboxes["s2"]))
    await asyncio.sleep(0.05)
    held.gates[0].set()
    await first
    await asyncio.sleep(0.05)
    assert held.batches == [1, 2]  # a clears its own entries and b's in one write
    a.cancel()  # shutdown while that write is under way
    await asyncio.gather(a, return_exceptions=True)
    with pytest.raises(RuntimeError, match="cancelled"):
        await asyncio.wait_for(b, 2)  # b learns its entries were not cleared; it does not wait forever
    assert held.batches == [1, 2]
    assert sorted(left.session_id for left in await store.unrelayed(10)) == ["s1", "s2"]  # for the sweep


async def test_background_queries_find_what_they_should(db: Db) -> None:
    store = make_store(db)
    await store.ensure_indexes()
    for i in range(5):
        await store.add(opened(f"s{i}", f"tok{i}"))
    s2 = await store.get("s2")
    assert s2 is not None
    closed = record_activation(s2, Activation("d", T0, FactSource.PUSH))
    assert closed.session.state is SessionState.SUCCEEDED
    assert await store.save(replace(closed, session=replace(closed.session, version=2)), 1)
    assert [s.session_id for s in await store.active(2)] == ["s0", "s1"]
    assert [s.session_id for s in await store.active(10, after_id="s1")] == ["s3", "s4"]
    assert await store.expiring(T0 + timedelta(minutes=10) - timedelta(seconds=1), 10) == []
    assert len(await store.expiring(T0 + timedelta(minutes=10), 10)) == 4


async def test_device_owners_only_move_forward_in_push_time(db: Db) -> None:
    owners = DeviceOwnerStore(db.db)
    assert await owners.owner_of("d1") is None
    await owners.record_bound("d1", "a", T0 + timedelta(seconds=10))
    await owners.record_bound("d1", "b", T0 + timedelta(seconds=5))  # late: ignored
    assert await owners.owner_of("d1") == "a"
    await owners.record_released("d1", T0 + timedelta(seconds=20))
    assert await owners.owner_of("d1") is None
    await owners.record_bound("d1", "c", T0 + timedelta(seconds=30))
    await owners.record_bound("d1", "c", T0 + timedelta(seconds=30))  # redelivered
    assert await owners.owner_of("d1") == "c"
    await asyncio.gather(*(owners.record_bound("d2", f"o{i}", T0 + timedelta(seconds=i)) for i in range(10)))
    assert await owners.owner_of("d2") == "o9"


async def test_a_release_and_a_binding_of_one_instant_are_a_rebind(db: Db) -> None:
    owners = DeviceOwnerStore(db.db)
    at = T0 + timedelta(seconds=10, milliseconds=123)
    await owners.record_bound("d1", "old", T0)
    await owners.record_released("d1", at, "old")
    assert await owners.owner_of("d1") is None
    assert await owners.owner_of("d1", at) == "old"  # the binding of the same instant is a rebind
    assert await owners.owner_of("d1", at + timedelta(seconds=1)) is None  # a later one is not
    await owners.record_bound("d1", "new", at)  # the binding of that instant wins over the release
    await owners.record_released("d1", at, "old")  # a redelivered release does not roll it back
    assert await owners.owner_of("d1") == "new"


async def test_every_listing_query_is_answered_from_an_index(db: Db) -> None:
    store = make_store(db)
    await store.ensure_indexes()
    names = {
        tuple(k for k, _ in spec["key"].items())
        for spec in await db.db["sessions"].list_indexes().to_list(None)
    }
    for wanted in [
        ("token",),
        ("idempotency",),
        ("owner_uid", "issued_at", "_id"),
        ("home_id", "issued_at", "_id"),
        ("state", "issued_at", "_id"),
        ("day", "issued_at", "_id"),
        ("state", "expires_at"),
        ("state", "_id"),
    ]:
        assert wanted in names


async def test_listings_page_newest_first_by_each_filter(db: Db) -> None:
    from fleet_pairing import views

    store = SessionStore(db.db, EventEncoder("tenant1", "eu"), clock=lambda: T0)
    await store.ensure_indexes()
    for i in range(7):
        t = open_session(
            f"s{i}",
            request(owner="o-even" if i % 2 == 0 else "o-odd"),
            region="AY",
            token=f"tok{i}",
            lifetime=timedelta(minutes=10),
            now=T0 + timedelta(hours=12 * (i // 3)),  # three per half day: equal times are broken by id
        )
        await store.add(replace(t, session=replace(t.session, version=1)))
    queries = views.PairingViews(store)

    seen: list[str] = []
    cursor = None
    while True:
        page = await queries.page(cursor=cursor, limit=3)
        seen += [s.session_id for s in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == ["s6", "s5", "s4", "s3", "s2", "s1", "s0"]

    evens = await queries.page(owner_uid="o-even", limit=10)
    assert [s.session_id for s in evens.items] == ["s6", "s4", "s2", "s0"]
    first_day = await queries.page(day=T0.date(), limit=10)
    assert [s.session_id for s in first_day.items] == ["s2", "s1", "s0"]  # 12:00; s3-s5 at 00:00 the next day
    next_day = await queries.page(day=(T0 + timedelta(days=1)).date(), limit=10)
    assert [s.session_id for s in next_day.items] == ["s6", "s5", "s4", "s3"]
    active = await queries.page(state=SessionState.ACTIVE, home_id="h1", limit=2)
    assert [s.session_id for s in active.items] == ["s6", "s5"]
    assert await queries.page(state=SessionState.CANCELLED) == views.SessionPage(items=[], next_cursor=None)

    one = await queries.session("s3")
    assert one is not None
    assert (one.state, one.counts.paired, one.token) == (SessionState.ACTIVE, 0, "tok3")
    assert await queries.session("nope") is None
    with pytest.raises(views.InvalidCursor):
        await queries.page(cursor="not-a-cursor")
    with pytest.raises(ValueError, match="limit"):
        await queries.page(limit=0)


# --- the outbox sweep: from the `outbox_at` index, never a read of every session --------------------------

SWEPT_AT_SIZE = 2000  # sessions with nothing waiting, beside the few the sweep must find


async def test_the_sweep_reads_only_sessions_with_events_waiting_from_an_index(db: Db) -> None:
    store = make_store(db)
    await store.ensure_indexes()
    relayed = [
        session_to_doc(opened(f"done{i:05}", f"tokd{i}").session, [], T0) for i in range(SWEPT_AT_SIZE)
    ]
    await db.db["sessions"].insert_many(relayed)  # their events went out long ago: no outbox, no flag
    for i in range(3):  # a crash right after these writes: their relays never ran
        await store.add(opened(f"left{i}", f"tokl{i}"))
    fresh = SessionStore(db.db, EventEncoder("tenant1", "eu"), clock=lambda: T0 + timedelta(minutes=1))
    await fresh.add(opened("fresh", "tokf"))  # written a moment ago: its own relay is still under way

    cutoff = T0 + timedelta(seconds=30)
    reply = await plan(db.db, "sessions", unrelayed_filter(cutoff), limit=100)
    assert answered_from_index(reply), reply
    if "filterPushdown" not in reply:  # MongoDB also counts what it read
        stats = await explain_stats(db, unrelayed_filter(cutoff))
        assert stats["executionStats"]["totalDocsExamined"] == 3, stats["executionStats"]
    # what the sweep read before: every session, on either server
    assert not answered_from_index(await plan(db.db, "sessions", {"outbox.0": {"$exists": True}}, limit=100))

    publisher = RecordingPublisher()
    relay = OutboxRelay(
        make_store(db), publisher, grace=timedelta(seconds=30), clock=lambda: T0 + timedelta(minutes=1)
    )
    assert await relay.sweep() == 3
    assert sorted(topics.PAIRING_EVENTS.decode(e.body).data.token for e in publisher.published) == [
        "tokl0",
        "tokl1",
        "tokl2",
    ]
    assert [left.session_id for left in await store.unrelayed(10)] == ["fresh"]
    assert await relay.sweep() == 0  # nothing twice
    assert await relay.sweep(grace=timedelta(0)) == 1  # at start and after a drain: everything waiting
    assert await store.unrelayed(10) == []
    assert await db.db["sessions"].count_documents({OUTBOX_AT: {"$exists": True}}) == 0


async def explain_stats(db: Db, filter_: dict[str, Any]) -> dict[str, Any]:
    reply: dict[str, Any] = await db.db.command(
        "explain", {"find": "sessions", "filter": filter_}, verbosity="executionStats"
    )
    return reply


async def test_the_flag_stays_until_the_relay_of_the_newest_write_clears(db: Db) -> None:
    store = make_store(db)
    t = opened("s1", "tok1", expected_devices=3)
    await store.add(t)  # version 1: issued
    step = record_activation(t.session, Activation("d1", T0, FactSource.PUSH))
    assert await store.save(replace(step, session=replace(step.session, version=2)), 1)  # + paired

    await store.clear_outboxes([("s1", 1)])  # the relay of version 1 ends after version 2 was written
    [left] = await store.unrelayed(10)
    assert (left.version, len(left.entries)) == (2, 2)  # both stay for version 2's relay (or the sweep)
    await store.clear_outboxes([("s1", 2)])
    assert await store.unrelayed(10) == []
    doc = await db.db["sessions"].find_one({"_id": "s1"})
    assert doc["outbox"] == []
    assert OUTBOX_AT not in doc

    later = record_activation(step.session, Activation("d2", T0, FactSource.PUSH))
    assert await store.save(replace(later, session=replace(later.session, version=3)), 2)
    [left] = await store.unrelayed(10)
    assert (left.version, [topics.PAIRING_EVENTS.decode(e.body).type for e in left.entries]) == (
        3,
        ["pairing.device.paired.v1"],
    )


async def test_events_an_earlier_version_left_without_the_flag_are_flagged_at_start(db: Db) -> None:
    store = make_store(db)
    await store.add(opened("old", "tokold"))
    await db.db["sessions"].update_one(
        {"_id": "old"}, {"$unset": {OUTBOX_AT: ""}}
    )  # as that version wrote it
    await store.add(opened("new", "toknew"))
    assert [left.session_id for left in await store.unrelayed(10)] == ["new"]
    assert await store.flag_unflagged_outboxes() == 1
    assert await store.flag_unflagged_outboxes() == 0
    publisher = RecordingPublisher()
    assert await OutboxRelay(make_store(db), publisher).sweep() == 2
    assert sorted(topics.PAIRING_EVENTS.decode(e.body).data.token for e in publisher.published) == [
        "toknew",
        "tokold",
    ]
