"""unbinding's Mongo adapters on the real MongoDB-wire server: quota counters exact under 8 concurrent
batches, idempotent units, conditional writes with the outbox in the same write, append-only logs, the relay
and record queries by device / operator / product / day."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from motor.motor_asyncio import AsyncIOMotorClient, AsyncIOMotorDatabase

from fleet_contracts.unbinding import RefusalCause, RequestUnbindBatch, UnbindMode
from fleet_unbinding import views
from fleet_unbinding.adapters.mongo import (
    Document,
    MongoAuthorizationStore,
    MongoBatchStore,
    MongoQuotaCounters,
    MongoQuotaLimits,
    MongoUnbindStore,
)
from fleet_unbinding.adapters.outbox import OutboxRelay
from fleet_unbinding.domain import authorization as authz
from fleet_unbinding.domain import batch as batches
from fleet_unbinding.domain import quota
from fleet_unbinding.domain import unbind as machine
from fleet_unbinding.domain.quota import BlockGrant, CounterKey, QuotaScope
from fleet_unbinding.domain.unbind import DeviceFacts, UnbindState
from fleet_unbinding.ports import OutboxEntry
from fleet_unbinding.service_layer import handlers as h
from fleet_unbinding.service_layer.events import EventFactory
from fleet_unbinding.service_layer.quota_blocks import QuotaAllocator
from tests.support import Stack
from tests.unit.unbinding.fakes import FakeClock, FakeTuya

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
DAY = "2026-11-29"
Db = AsyncIOMotorDatabase[Document]


@pytest.fixture
async def db(stack: Stack, unique: str) -> AsyncIterator[Db]:
    client: AsyncIOMotorClient[Document] = AsyncIOMotorClient(stack.mongodb_uri, tz_aware=True)
    database = client[f"unbinding_{unique}"]
    yield database
    await client.drop_database(database.name)
    client.close()


async def test_eight_concurrent_batches_never_pass_either_counter_and_settle_exactly(db: Db) -> None:
    """8 batches, each with its own allocator (as 8 processes would), race on the same counters in blocks
    of 4: never past a limit, and once every block is settled the counters equal the units consumed."""
    counters = MongoQuotaCounters(db)
    await counters.ensure_indexes()
    account_limit, product_limit = 60, 45
    clock = FakeClock(NOW)

    async def batch(b: int) -> int:
        allocator = QuotaAllocator(counters, clock, block_size=4)
        consumed = 0
        for i in range(15):
            # two operators share the product counter; each batch races the others on both counters
            keys = quota.counter_keys(f"op{b % 2}", "p1", DAY)
            got = await allocator.take([(keys[0], account_limit), (keys[1], product_limit)])
            if isinstance(got, BlockGrant):
                took = i % 5 != 0  # some devices lose their write: their units go back
                await allocator.release(got, consumed=took)
                consumed += took
        await allocator.close_idle(everything=True)
        return consumed

    consumed = sum(await asyncio.gather(*(batch(b) for b in range(8))))
    product = CounterKey(QuotaScope.PRODUCT, "p1", DAY)
    assert 0 < consumed <= product_limit
    assert await counters.used(product) == consumed
    ops = [await counters.used(CounterKey(QuotaScope.ACCOUNT, f"op{k}", DAY)) for k in range(2)]
    assert sum(ops) == consumed  # every account unit of a refused or losing device was given back
    assert await counters.open_blocks() == []
    doc = await db["quota_counters"].find_one({"_id": product.id})
    assert doc is not None
    assert (doc["open"], doc["blocks"]) == (0, {})


async def test_blocks_take_what_is_left_settle_once_and_refunds_count_once(db: Db) -> None:
    counters = MongoQuotaCounters(db)
    await counters.ensure_indexes()
    key = CounterKey(QuotaScope.PRODUCT, "p1", DAY)
    until = NOW + timedelta(seconds=35)
    assert await counters.reserve_block(key, 10, 4, "ba", until) == 4  # creates the counter
    assert await counters.reserve_block(key, 10, 8, "bb", until) == 6  # what is left
    assert await counters.reserve_block(key, 10, 4, "bc", until) == 0
    assert await counters.used(key) == 10
    assert {(b.block_id, b.n, b.until) for b in await counters.open_blocks()} == {
        ("ba", 4, until),
        ("bb", 6, until),
    }
    await counters.settle(key, "ba", 4, 1)
    await counters.settle(key, "ba", 4, 1)  # settled once
    assert await counters.used(key) == 7
    await counters.refund([key], "b/d1")
    await counters.refund([key], "b/d1")  # a retry after a crash
    assert await counters.used(key) == 6
    await counters.settle(key, "bb", 6, 6)
    assert await counters.used(key) == 6
    assert await counters.open_blocks() == []
    assert await counters.reserve_block(CounterKey(QuotaScope.ACCOUNT, "op", DAY), 0, 4, "bd", until) == 0
    assert await counters.used(CounterKey(QuotaScope.ACCOUNT, "op", "2026-11-30")) == 0


async def test_concurrent_first_blocks_create_one_counter(db: Db) -> None:
    counters = MongoQuotaCounters(db)
    key = CounterKey(QuotaScope.PRODUCT, "fresh", DAY)
    until = NOW + timedelta(seconds=35)
    out = await asyncio.gather(*(counters.reserve_block(key, 5, 2, f"b{i}", until) for i in range(16)))
    assert sum(out) == 5
    assert await counters.used(key) == 5


async def test_a_blocks_devices_are_counted_from_an_index(db: Db) -> None:
    store = MongoUnbindStore(db)
    await store.ensure_indexes()
    facts = DeviceFacts("d1", "p1", "u1", 1_700_000_000, True)
    devices = [machine.new("b1", f"d{i}", "op", UnbindMode.LIST, reset=False) for i in range(3)]
    await store.add_many(devices)
    for i, u in enumerate(devices[:2]):
        started = replace(machine.start_call(u, facts, DAY, ("ba", f"bp{i}"), NOW), version=1)
        assert await store.save(started, [])
    keys = quota.counter_keys("op", "p1", DAY)
    assert await store.holding(keys[0], "ba") == 2
    assert await store.holding(keys[1], "bp0") == 1
    assert await store.holding(keys[1], "ba") == 0
    stored = await store.get("b1", "d1")
    assert stored is not None
    assert stored.quota_blocks == ("ba", "bp1")


def _entry(event_id: str) -> OutboxEntry:
    return OutboxEntry(event_id, "persistent://fleet/unbinding/events", "b1", event_id.encode())


async def test_conditional_writes_keep_unrelayed_events_and_the_loser_of_a_race_changes_nothing(
    db: Db,
) -> None:
    store = MongoUnbindStore(db)
    await store.ensure_indexes()
    u = machine.new("b1", "d1", "op", UnbindMode.LIST, reset=False)
    await store.add_many([u])
    await store.add_many([u])  # idempotent
    marked = replace(u, quota_day=DAY, product_id="p1", version=1)
    assert await store.save(marked, [_entry("e1")])
    assert not await store.save(replace(u, quota_day="other", version=1), [_entry("x")])  # stale version
    final, _ = machine.refuse(marked, RefusalCause.UNAUTHORIZED, NOW)
    assert await store.save(replace(final, version=2), [_entry("e2")])
    [(stored, entries)] = await store.with_outbox(10)
    assert [e.id for e in entries] == ["e1", "e2"]  # appended, never overwritten
    assert (stored.state, stored.version, stored.units_held) == (UnbindState.REFUSED, 2, True)
    assert [x.device_id for x in await store.refunds_due(10)] == ["d1"]
    await store.clear_outbox(stored.id, entries[:1])
    [(_, left)] = await store.with_outbox(10)
    assert [e.id for e in left] == ["e2"]
    still_open, tally = await store.tally("b1")
    assert (still_open, tally.refused_by_cause) == (0, {RefusalCause.UNAUTHORIZED: 1})


async def test_concurrent_saves_of_one_version_have_exactly_one_winner(db: Db) -> None:
    store = MongoBatchStore(db)
    req = RequestUnbindBatch(batch_id="b1", operator_id="op", mode=UnbindMode.LIST, device_ids=["d1"])
    batch, _ = batches.create(req, NOW, approval_threshold=0)
    assert await store.add(batch, [_entry("requested")])
    assert not await store.add(batch, [])
    wins = await asyncio.gather(
        *(
            store.save(replace(batches.approve(batch, f"admin{i}"), version=1), [_entry(f"a{i}")])
            for i in range(8)
        )
    )
    assert wins.count(True) == 1
    stored = await store.get("b1")
    assert stored is not None
    assert stored.status.value == "running"
    assert await store.running(10) == ["b1"]
    [(_, entries)] = await store.with_outbox(10)
    assert len(entries) == 2


async def test_append_only_logs_refuse_a_taken_sequence(db: Db) -> None:
    auths = MongoAuthorizationStore(db)
    await auths.ensure_indexes()
    s0 = await auths.product("p1")
    r1 = authz.register(s0, owner="dev", original_owner="odm", actor="dev", at=NOW)
    assert await auths.append(r1)
    assert not await auths.append(r1)
    s1 = await auths.product("p1")
    grant = authz.grant(s1, account="partner", kind=authz.GrantKind.PARTNER, actor="dev", at=NOW)
    rival = authz.grant(s1, account="other", kind=authz.GrantKind.PARTNER, actor="dev", at=NOW)
    assert [await auths.append(grant), await auths.append(rival)] == [True, False]
    state = await auths.product("p1")
    assert state.may_unbind("partner")
    assert state.may_unbind("odm")
    assert not state.may_unbind("other")
    assert [r.seq for r in await auths.of_account("partner")] == [2]

    limits = MongoQuotaLimits(db)
    await limits.ensure_indexes()
    o1 = quota.override(
        [], scope=QuotaScope.PRODUCT, subject="p1", limit=500, reason="T-1", actor="a", at=NOW
    )
    assert await limits.append(o1)
    assert not await limits.append(o1)
    o2 = quota.override(
        [o1], scope=QuotaScope.PRODUCT, subject="p1", limit=20, reason="T-2", actor="a", at=NOW
    )
    assert await limits.append(o2)
    assert quota.limit_of(await limits.history(QuotaScope.PRODUCT, "p1")) == 20


class ListPublisher:
    def __init__(self) -> None:
        self.sent: list[OutboxEntry] = []

    async def publish(self, entries: Sequence[OutboxEntry]) -> None:
        self.sent.extend(entries)


def real_ports(db: Db, tuya: FakeTuya) -> h.Ports:
    return h.Ports(
        batches=MongoBatchStore(db),
        unbinds=MongoUnbindStore(db),
        counters=MongoQuotaCounters(db),
        limits=MongoQuotaLimits(db),
        authorizations=MongoAuthorizationStore(db),
        devices=tuya,
        events=EventFactory(tenant="t", region="eu"),
        clock=FakeClock(NOW),
    )


async def test_eight_concurrent_batches_through_the_handlers_unbind_exactly_the_quota(db: Db) -> None:
    tuya = FakeTuya()
    ports = real_ports(db, tuya)
    await h.manage_authorization(
        ports, "p1", lambda s: authz.register(s, owner="dev", original_owner=None, actor="dev", at=NOW)
    )
    for k in range(8):

        def partner(s: authz.ProductAuthorization, k: int = k) -> authz.AuthorizationRecord:
            return authz.grant(s, account=f"op{k}", kind=authz.GrantKind.PARTNER, actor="dev", at=NOW)

        await h.manage_authorization(ports, "p1", partner)
    for b in range(8):
        ids = [f"b{b}d{i}" for i in range(20)]
        for d in ids:
            tuya.add(d, "p1")
        req = RequestUnbindBatch(batch_id=f"b{b}", operator_id=f"op{b}", mode=UnbindMode.LIST, device_ids=ids)
        await h.request_batch(ports, req)
    await asyncio.gather(*(h.run_batch(ports, f"b{b}") for b in range(8)))
    product = await MongoQuotaCounters(db).used(CounterKey(QuotaScope.PRODUCT, "p1", DAY))
    assert product == 100
    assert sum(tuya.removals.values()) == 100
    assert set(tuya.removals.values()) == {1}
    accounts = [
        await MongoQuotaCounters(db).used(CounterKey(QuotaScope.ACCOUNT, f"op{b}", DAY)) for b in range(8)
    ]
    unbound = [sum(1 for d in tuya.removals if d.startswith(f"b{b}d")) for b in range(8)]
    assert accounts == unbound
    for b in range(8):
        batch = await ports.batches.get(f"b{b}")
        assert batch is not None
        assert batch.status.value == "finished"


async def test_a_batch_runs_on_the_real_store_and_the_relay_records_and_orders_its_events(db: Db) -> None:
    batch_store, unbinds = MongoBatchStore(db), MongoUnbindStore(db)
    counters, limits, auths = MongoQuotaCounters(db), MongoQuotaLimits(db), MongoAuthorizationStore(db)
    for s in (batch_store, unbinds, counters, limits, auths):
        await s.ensure_indexes()
    tuya = FakeTuya()
    for i in range(6):
        tuya.add(f"d{i}", "p1")
    tuya.devices["d5"] = DeviceFacts("d5", "p2", "u1", 1)
    ports = h.Ports(
        batches=batch_store,
        unbinds=unbinds,
        counters=counters,
        limits=limits,
        authorizations=auths,
        devices=tuya,
        events=EventFactory(tenant="t", region="eu"),
        clock=FakeClock(NOW),
    )
    await h.manage_authorization(
        ports, "p1", lambda s: authz.register(s, owner="op", original_owner=None, actor="op", at=NOW)
    )
    await h.set_limit(ports, QuotaScope.PRODUCT, "p1", limit=4, reason="T-9", actor="admin")
    req = RequestUnbindBatch(
        batch_id="b1", operator_id="op", mode=UnbindMode.LIST, device_ids=[f"d{i}" for i in range(6)]
    )
    await h.request_batch(ports, req)
    done = await h.run_batch(ports, "b1")
    assert done is not None
    assert done.status.value == "finished"
    assert await counters.used(CounterKey(QuotaScope.PRODUCT, "p1", DAY)) == 4
    assert sum(tuya.removals.values()) == 4

    publisher = ListPublisher()
    relay = OutboxRelay(batch_store, unbinds, publisher)
    assert await relay.relay_once() == 8
    ids = [e.id for e in publisher.sent]
    assert ids[0] == "unbinding:b1:requested"
    assert ids[-1] == "unbinding:b1:finished"
    assert await relay.relay_once() == 0
    await unbinds.add_records([u for u in [await unbinds.get("b1", "d0")] if u is not None])  # replay: no-op

    by_product = await unbinds.find_records(product_id="p1")
    assert len(by_product) == 5
    assert len(await unbinds.find_records(operator_id="op", day=DAY)) == 6
    [one] = await unbinds.find_records(device_id="d5")
    assert (one["result"], one["cause"]) == ("refused", "unauthorized")
    refused_quota = [r for r in by_product if r["cause"] == "quota_exceeded"]
    assert len(refused_quota) == 1
    with pytest.raises(ValueError, match="name a device"):
        await unbinds.find_records()
    first = await unbinds.find_records(operator_id="op", limit=4)
    rest = await unbinds.find_records(operator_id="op", before=(first[-1]["at"], first[-1]["_id"]), limit=4)
    assert len(first) + len(rest) == 6  # every result finished at the same instant: the _id breaks ties
    assert {r["_id"] for r in first}.isdisjoint(r["_id"] for r in rest)

    progress = await views.batch_progress(batch_store, unbinds, "b1")
    assert progress is not None
    shown = progress.as_dict()
    assert (shown["total"], shown["done"], shown["status"]) == (6, 6, "finished")
    assert shown["refused_by_cause"] == {"quota_exceeded": 1, "unauthorized": 1}


async def test_pending_documents_are_found_by_an_indexed_flag_cleared_only_when_the_outbox_is_empty(
    db: Db,
) -> None:
    store = MongoUnbindStore(db)
    await store.ensure_indexes()
    # (sparse on MongoDB; FerretDB does not report the option back)
    assert any(
        dict(spec["key"]) == {"outbox_pending": 1}
        for spec in (await store.unbinds.index_information()).values()
    )
    quiet = machine.new("b1", "quiet", "op", UnbindMode.LIST, reset=False)
    busy = machine.new("b1", "busy", "op", UnbindMode.LIST, reset=False)
    await store.add_many([quiet, busy])
    assert await store.with_outbox(10) == []  # no events, not pending
    assert await store.save(replace(quiet, quota_day=DAY, version=1), [])  # a write without events
    marked = replace(busy, quota_day=DAY, version=1)
    assert await store.save(marked, [_entry("e1")])
    [(stored, entries)] = await store.with_outbox(10)
    assert stored.device_id == "busy"
    # an event appended after the relay read keeps the document pending when the read ones are cleared
    assert await store.save(replace(marked, version=2), [_entry("e2")])
    await store.clear_outbox(stored.id, entries)
    [(_, left)] = await store.with_outbox(10)
    assert [e.id for e in left] == ["e2"]
    await store.clear_outbox(stored.id, left)
    assert await store.with_outbox(10) == []
    doc = await store.unbinds.find_one({"_id": stored.id})
    assert doc is not None
    assert "outbox_pending" not in doc
    assert doc["outbox"] == []

    batch_store = MongoBatchStore(db)
    await batch_store.ensure_indexes()
    req = RequestUnbindBatch(batch_id="b2", operator_id="op", mode=UnbindMode.LIST, device_ids=["d1"])
    batch, _ = batches.create(req, NOW, approval_threshold=10)
    assert await batch_store.add(batch, [_entry("requested")])
    [(batch_id, pending)] = await batch_store.with_outbox(10)
    await batch_store.clear_outbox(batch_id, pending)
    assert await batch_store.with_outbox(10) == []


async def test_outboxes_are_emptied_in_few_round_trips_unless_a_write_appended_meanwhile(db: Db) -> None:
    store = MongoUnbindStore(db)
    await store.ensure_indexes()
    # more than one update command holds (the local server takes at most 64 statements per command)
    devices = [machine.new("b1", f"d{i}", "op", UnbindMode.LIST, reset=False) for i in range(150)]
    await store.add_many(devices)
    for i, u in enumerate(devices):
        assert await store.save(replace(u, version=1), [_entry(f"e{i}")])
    relayed = await store.with_outbox(500)
    assert len(relayed) == 150
    # d2 moves on (a new event) after the relay read it: its new event must stay
    d2 = next(u for u, _ in relayed if u.device_id == "d2")
    assert await store.save(replace(d2, version=2), [_entry("late")])
    await store.clear_outboxes(relayed)
    [(left, entries)] = await store.with_outbox(10)
    assert (left.device_id, [e.id for e in entries]) == ("d2", ["late"])
    await store.clear_outboxes([(left, entries)])
    assert await store.with_outbox(10) == []


async def test_a_database_written_by_the_earlier_version_keeps_working(db: Db) -> None:
    """Counters in the earlier layout (units listed by name, no blocks) and devices it left half-way: this
    version reserves blocks on those counters, gives back only units still listed, once, and ends with the
    counters equal to the devices unbound."""
    tuya = FakeTuya()
    ports = real_ports(db, tuya)
    for store in (MongoBatchStore(db), MongoUnbindStore(db), MongoQuotaCounters(db)):
        await store.ensure_indexes()
    await h.manage_authorization(
        ports, "p1", lambda s: authz.register(s, owner="op", original_owner=None, actor="op", at=NOW)
    )
    devices = ["held", "free", "reserved", "offline", "unbound"]
    for d in devices:
        tuya.add(d, "p1")
    tuya.devices["unbound"] = replace(tuya.devices["unbound"], owner_uid=None)
    tuya.remove_script["offline"] = ["2001"]
    req = RequestUnbindBatch(batch_id="b1", operator_id="op", mode=UnbindMode.LIST, device_ids=devices)
    await h.request_batch(ports, req)
    # the device documents as the earlier version left them: the quota day written before reserving
    old_state = {
        "held": {"state": "pending"},  # its reservation landed, the RESERVED write did not
        "free": {"state": "pending"},  # died before its reservation landed
        "reserved": {"state": "reserved", "units_held": True},
        "offline": {"state": "reserved", "units_held": True},
        "unbound": {"state": "unbound", "units_held": True, "finished_at": NOW},
    }
    for d, fields in old_state.items():
        await db["device_unbinds"].update_one(
            {"_id": f"b1/{d}"},
            {"$set": {"product_id": "p1", "quota_day": DAY, **fields}, "$inc": {"version": 1}},
        )
    listed = [f"b1/{d}" for d in ("held", "reserved", "offline", "unbound")]
    for key in quota.counter_keys("op", "p1", DAY):
        await db["quota_counters"].insert_one(
            {
                "_id": key.id,
                "scope": key.scope.value,
                "subject": key.subject,
                "day": key.day,
                "used": len(listed),
                "units": listed,
            }
        )

    await h.recover(ports)

    got = {u.device_id: u.state.value for u in await ports.unbinds.of_batch("b1")}
    assert got == {d: "refused" if d == "offline" else "unbound" for d in devices}
    assert tuya.removals == {"held": 1, "free": 1, "reserved": 1}
    for key in quota.counter_keys("op", "p1", DAY):
        doc = await db["quota_counters"].find_one({"_id": key.id})
        assert doc is not None
        assert doc["used"] == 4  # held, free, reserved, unbound
        assert sorted(doc["units"]) == ["b1/reserved", "b1/unbound"]  # given back: unlisted
        assert (doc["open"], doc["blocks"]) == (0, {})
        assert (await h.usage(ports, key.scope, key.subject, day=DAY)).used == 4
    batch = await ports.batches.get("b1")
    assert batch is not None
    assert batch.status.value == "finished"
    # a second recovery (another replica, a restart) gives nothing back twice
    ports.new_process()
    await h.recover(ports)
    assert await ports.counters.used(quota.counter_keys("op", "p1", DAY)[0]) == 4
