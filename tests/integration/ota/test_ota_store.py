"""ota's Mongo adapters on the real MongoDB-wire server: conditional writes under concurrency, the outbox in
the same write, idempotent planning, indexed queries, and counters that equal a recount after relays are
killed midway."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from motor.motor_asyncio import AsyncIOMotorClient, AsyncIOMotorDatabase

from fleet_contracts.device import OtaUpgradeStatus as T
from fleet_contracts.ota import DeviceUpgradeState as S
from fleet_contracts.ota import ReleaseStage, UpgradeType
from fleet_contracts.outbox import OutboxEntry
from fleet_ota.adapters.mongo import (
    DeviceStore,
    Document,
    FirmwareStore,
    LockStore,
    PacingStore,
    PlanStore,
    ProgressStore,
    RolloutStore,
    UpgradeStore,
    ensure_indexes,
)
from fleet_ota.adapters.relay import OutboxRelay
from fleet_ota.domain import upgrade as up
from fleet_ota.domain.firmware import FirmwareSpec
from fleet_ota.domain.release import Canary, RegionPlan, RolloutStatus, Threshold
from fleet_ota.domain.sweep import bucket, position
from fleet_ota.domain.targeting import DeviceRecord, PlanChunk
from fleet_ota.domain.upgrade import DeviceUpgrade, UpgradePolicy
from fleet_ota.ports import Claim, UpgradeRefused
from fleet_ota.service_layer import handlers
from fleet_ota.service_layer import outbox as ob
from fleet_ota.service_layer.handlers import Ports
from tests.integration.status import explain
from tests.support import Stack

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 29, 12, tzinfo=UTC)
POLICY = UpgradePolicy(max_attempts=2, backoff_s=60, backoff_max_s=60, attempt_timeout_s=600)
FC = ReleaseStage.FULL


@pytest.fixture
async def db(stack: Stack, unique: str) -> AsyncIterator[AsyncIOMotorDatabase[Document]]:
    client: AsyncIOMotorClient[Document] = AsyncIOMotorClient(stack.mongodb_uri, tz_aware=True)
    database = client[f"ota_{unique}"]
    await ensure_indexes(database)
    yield database
    await client.drop_database(database.name)
    client.close()


@dataclass
class FakePublisher:
    published: list[str] = field(default_factory=list)
    fail_rate: float = 0.0
    rng: random.Random = field(default_factory=lambda: random.Random(7))

    async def publish(self, entries: Sequence[OutboxEntry]) -> None:
        if self.rng.random() < self.fail_rate:
            raise ConnectionError("bus unavailable")
        self.published.extend(e.id for e in entries)


@dataclass
class FakeTuya:
    commands: list[tuple[str, int]] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)
    status: dict[str, T] = field(default_factory=dict)

    async def confirm_upgrade(self, device_id: str, channel: int) -> None:
        if device_id in self.refuse:
            raise UpgradeRefused(2001, "device is offline")
        self.commands.append((device_id, channel))

    async def progress(self, device_id: str, channel: int) -> tuple[T, int | None]:
        return self.status.get(device_id, T.NO_UPDATE), None

    async def current_versions(self, device_id: str) -> dict[int, str]:
        return {}

    async def upgrade_ended_at(self, device_id: str, channel: int) -> datetime | None:
        return None


def planned(n: int, release: str = "r1", region: str = "EU") -> list[DeviceUpgrade]:
    return [DeviceUpgrade(release, region, FC, f"d{i:05d}", "p1", 0, "1.2.0") for i in range(n)]


async def save(store: UpgradeStore, change: up.Change, expected: int) -> bool:
    return await store.save(change.upgrade, expected, ob.for_upgrade(change, tenant="t", now=NOW))


async def test_a_conditional_write_has_one_winner_under_concurrency(
    db: AsyncIOMotorDatabase[Document],
) -> None:
    store = UpgradeStore(db)
    [u] = planned(1)
    assert await store.create([u]) == [u]
    assert await store.create([u]) == []  # unique per release and device

    change = up.command(u, POLICY, NOW)
    results = await asyncio.gather(*(save(store, change, u.version) for _ in range(8)))
    assert sorted(results) == [False] * 7 + [True]
    stored = await db["upgrades"].find_one({"_id": u.upgrade_id})
    assert stored is not None
    assert (stored["state"], stored["attempt"], stored["version"], stored["relay"]) == (
        "commanded",
        1,
        1,
        True,
    )
    assert [e["id"] for e in stored["outbox"]] == [
        f"ota:{u.upgrade_id}:1"
    ]  # the event rode in the same write
    assert stored["outbox"][0]["delta"] == {"pending": -1, "upgrading": 1}


def chunks(n: int, size: int = 100, batch: str = "EU:full:0") -> list[PlanChunk]:
    ids = [f"d{i:05d}" for i in range(n)]
    return [PlanChunk("r1", "EU", FC, batch, i // size, tuple(ids[i : i + size])) for i in range(0, n, size)]


async def relay_all(db: AsyncIOMotorDatabase[Document], progress: ProgressStore) -> None:
    relay = OutboxRelay([db["upgrades"], db["plans"]], progress, FakePublisher(), clock=lambda: NOW)
    while await relay.relay_once():
        pass


LATER = NOW + timedelta(minutes=1)


async def test_plan_chunks_are_counted_once_and_claimed_without_overlap(
    db: AsyncIOMotorDatabase[Document],
) -> None:
    plans, store, progress = PlanStore(db), UpgradeStore(db), ProgressStore(db)
    await progress.open("r1", "EU", FC)
    await plans.add(chunks(120)[:1])  # a crash after the first chunk
    await plans.add(chunks(250))  # planning again inserts the rest
    await plans.add(chunks(250))
    await relay_all(db, progress)
    counts = await progress.counts("r1", "EU", FC)
    assert (counts.targeted, counts.pending) == (250, 250)
    assert await plans.device_ids("r1", "EU", besides="other") == {f"d{i:05d}" for i in range(250)}
    assert await plans.device_ids("r1", "EU", besides="EU:full:0") == set()
    assert await plans.count_in_stage("r1", "EU", FC, besides="other") == 250

    # eight dispatchers claim at once: no id is handed out twice
    claims = await asyncio.gather(
        *(plans.claim("r1", "EU", 30, now=NOW, repair_before=NOW - timedelta(seconds=30)) for _ in range(8))
    )
    taken = [d for c in claims if c is not None for d in c.device_ids]
    assert len(taken) == len(set(taken)) > 0
    # every claim but one gets its documents; the last dispatcher died before creating its own
    made = [c for c in claims if c is not None]
    for done in made[:-1]:
        await create(store, done)
        assert not await plans.fill(done)
    lost = set(made[-1].device_ids)
    # the rest is claimed and created; the lost ids come back only after the grace
    while (
        more := await plans.claim("r1", "EU", 40, now=NOW, repair_before=NOW - timedelta(seconds=30))
    ) is not None:
        assert not more.closing
        await create(store, more)
        await plans.fill(more)
    assert await db["upgrades"].count_documents({}) == 250 - len(lost)
    assert await plans.has_open("r1", "EU")
    repairs = 0
    while (again := await plans.claim("r1", "EU", 40, now=LATER, repair_before=NOW)) is not None:
        assert again.closing
        assert set(again.device_ids) == lost
        assert [u.device_id for u in await create(store, again)] == list(again.device_ids)
        await plans.fill(again)
        repairs += 1
    assert repairs == 1
    assert await db["upgrades"].count_documents({}) == 250
    assert not await plans.has_open("r1", "EU")
    await relay_all(db, progress)
    assert await progress.counts("r1", "EU", FC) == (await store.recount("r1"))[("EU", FC)]


async def create(store: UpgradeStore, c: Claim) -> list[DeviceUpgrade]:
    return await store.create([DeviceUpgrade("r1", "EU", FC, d, "p1", 0, "1.2.0") for d in c.device_ids])


async def test_stopping_cancels_the_unclaimed_ids_in_the_chunks_own_write(
    db: AsyncIOMotorDatabase[Document],
) -> None:
    plans, store, progress = PlanStore(db), UpgradeStore(db), ProgressStore(db)
    await progress.open("r1", "EU", FC)
    await plans.add(chunks(250))
    claim = await plans.claim("r1", "EU", 30, now=NOW, repair_before=NOW)
    assert claim is not None
    assert await plans.cancel("r1", "EU") == 220
    assert await plans.cancel("r1", "EU") == 0
    assert await plans.claim("r1", "EU", 30, now=NOW, repair_before=NOW - timedelta(seconds=1)) is None
    created = await create(store, claim)
    assert await plans.fill(claim)  # cancelled: the dispatcher cancels what it created
    for u in created:
        assert await save(store, up.cancel(u, "release stopped"), u.version)
    await relay_all(db, progress)
    counts = await progress.counts("r1", "EU", FC)
    assert (counts.targeted, counts.pending, counts.cancelled) == (250, 0, 250)
    assert counts == (await store.recount("r1"))[("EU", FC)]


async def test_indexed_queries_find_what_is_due(db: AsyncIOMotorDatabase[Document]) -> None:
    store = UpgradeStore(db)
    ups = planned(4)
    await store.create(ups)
    a, b, c, _ = ups
    commanded = up.command(a, POLICY, NOW)
    assert await save(store, commanded, 0)
    failed = up.on_progress(up.command(b, POLICY, NOW).upgrade, T.FAILED, None, POLICY, NOW)
    assert await store.save(failed.upgrade, 0, [])
    assert await save(store, up.cancel(c, "stopped"), 0)

    assert [u.device_id for u in await store.deadline_passed(NOW + timedelta(seconds=600), 10)] == ["d00000"]
    assert await store.deadline_passed(NOW + timedelta(seconds=599), 10) == []
    assert [u.device_id for u in await store.commanded_before(NOW, 10)] == ["d00000"]
    ready = await store.ready_to_command("r1", "EU", NOW, 10)
    assert [u.device_id for u in ready] == ["d00003"]  # b waits for its backoff, c is cancelled
    ready = await store.ready_to_command("r1", "EU", NOW + timedelta(seconds=60), 10)
    assert sorted(u.device_id for u in ready) == ["d00001", "d00003"]
    assert [u.device_id for u in await store.cancellable("r1", "EU", 10)] == ["d00001", "d00003"]


async def test_one_replica_reserves_each_round_of_the_shared_dispatch_schedule(
    db: AsyncIOMotorDatabase[Document],
) -> None:
    pacing = PacingStore(db)
    assert await pacing.next_at("r1", "EU") is None
    first = await asyncio.gather(*(pacing.move("r1", "EU", None, 100.5) for _ in range(6)))
    assert sorted(first) == [False] * 5 + [True]
    moved = await asyncio.gather(*(pacing.move("r1", "EU", 100.5, 100.5 + 0.1 * i) for i in range(1, 7)))
    assert sum(moved) == 1
    winner = 100.5 + 0.1 * (moved.index(True) + 1)
    assert await pacing.next_at("r1", "EU") == winner
    await pacing.give_back("r1", "EU", 0.25)
    assert await pacing.next_at("r1", "EU") == pytest.approx(winner - 0.25)
    assert await pacing.next_at("r1", "US") is None


async def test_one_replica_at_a_time_holds_the_projects_pace(db: AsyncIOMotorDatabase[Document]) -> None:
    """The lease on the project's pace: taken by the first, renewed by its holder, refused to the others
    (racing included) until it has ended, then taken over; the schedule's own document is left alone."""
    pacing = PacingStore(db)
    assert await pacing.move("", "t", None, 100.0)
    wins = await asyncio.gather(*(pacing.hold("", "t", f"r{k}", now=10.0, until=15.0) for k in range(4)))
    assert sum(wins) == 1
    holder = f"r{wins.index(True)}"
    other = "r9"
    assert await pacing.hold("", "t", holder, now=12.0, until=17.0)  # renewed
    assert not await pacing.hold("", "t", other, now=16.9, until=21.9)  # still held
    assert await pacing.hold("", "t", other, now=17.0, until=22.0)  # ended: taken over
    assert not await pacing.hold("", "t", holder, now=18.0, until=23.0)  # the old holder stands by
    assert await pacing.next_at("", "t") == 100.0


def _ports(db: AsyncIOMotorDatabase[Document]) -> Ports:
    return Ports(
        firmware=FirmwareStore(db),
        rollouts=RolloutStore(db),
        upgrades=UpgradeStore(db),
        plans=PlanStore(db),
        progress=ProgressStore(db),
        devices=DeviceStore(db),
        locks=LockStore(db),
        pacing=PacingStore(db),
        tuya=FakeTuya(),
        clock=lambda: datetime.now(UTC),
        tenant="t",
        policy=POLICY,
    )


async def test_replicas_and_regions_take_the_projects_upgrade_slots_a_full_gap_apart(
    stack: Stack, db: AsyncIOMotorDatabase[Document]
) -> None:
    """Two replicas (each its own connection and pace), four regions each, race for the project's schedule
    on Tuya's upgrade API: every slot taken is a full gap after the one before, whoever took it; slots not
    used go back only while no one took the slots after them."""
    other: AsyncIOMotorClient[Document] = AsyncIOMotorClient(stack.mongodb_uri, tz_aware=True)
    try:
        replicas = [
            (_ports(db), handlers.ProjectPace(20.0)),
            (_ports(other[db.name]), handlers.ProjectPace(20.0)),
        ]

        async def round_(k: int) -> tuple[float, list[float]]:
            p, pace = replicas[k % 2]
            return await pace.reserve(p, 3, 1.0)

        taken = await asyncio.gather(*(round_(k) for k in range(8)))
        slots = sorted(start + sum(gaps[:i]) for start, gaps in taken for i in range(len(gaps)))
        assert len(slots) >= 6
        gap = 1 / (20.0 * 0.97)
        assert min(b - a for a, b in itertools.pairwise(slots)) >= gap - 1e-6
        p, pace = replicas[0]
        end = max(start + sum(gaps) for start, gaps in taken)
        assert await p.pacing.next_at("", "t") == pytest.approx(end)
        # further ahead than the slots the rounds took
        start, gaps = await pace.reserve(p, 2, 5.0)
        later = await replicas[1][1].reserve(replicas[1][0], 1, 5.0)
        assert later[0] == pytest.approx(start + sum(gaps))
        await pace.give_back(p, start, gaps, 0)  # someone took the slot after: kept
        assert await p.pacing.next_at("", "t") == pytest.approx(later[0] + sum(later[1]))
        start, gaps = await pace.reserve(p, 2, 5.0)
        await pace.give_back(p, start, gaps, 1)  # the last one taken: the unused slot goes back
        assert await p.pacing.next_at("", "t") == pytest.approx(start + gaps[0])
    finally:
        other.close()


async def test_one_channel_lock_per_device(db: AsyncIOMotorDatabase[Document]) -> None:
    locks = LockStore(db)
    assert await locks.acquire("d1", 0, "r1:d1")
    assert await locks.acquire("d1", 0, "r1:d1")  # the holder again
    assert not await locks.acquire("d1", 9, "r2:d1")
    await locks.release("d1", "r2:d1")  # not the holder: nothing happens
    assert not await locks.acquire("d1", 9, "r2:d1")
    await locks.release("d1", "r1:d1")
    assert await locks.acquire("d1", 9, "r2:d1")


async def test_counters_equal_a_recount_after_relays_are_killed_midway(
    db: AsyncIOMotorDatabase[Document],
) -> None:
    """Transitions keep coming while relays are cancelled at random awaits (as a killed process stops between
    two database operations) and publishing fails at random; at the end the counters equal a recount."""
    store, progress, plans = UpgradeStore(db), ProgressStore(db), PlanStore(db)
    await progress.open("r1", "EU", FC)
    await plans.add(chunks(60, size=25))  # 60 planned: 45 get their documents, 15 stay planned only
    for limit in (25, 20):
        claim = await plans.claim("r1", "EU", limit, now=NOW, repair_before=NOW)
        assert claim is not None
        await create(store, claim)
        await plans.fill(claim)
    publisher = FakePublisher(fail_rate=0.2)
    counted = [db["upgrades"], db["plans"]]
    relay = OutboxRelay(counted, progress, publisher, grace_s=3600, clock=lambda: NOW)
    rng = random.Random(13)
    steps = [
        lambda u: up.command(u, POLICY, NOW),
        lambda u: up.on_progress(u, T.UPGRADING, 40, POLICY, NOW),
        lambda u: up.on_presence(u, False, NOW),
        lambda u: up.on_presence(u, True, NOW),
        lambda u: up.on_progress(u, T.FAILED, None, POLICY, NOW),
        lambda u: up.command(u, POLICY, NOW + timedelta(hours=1)),
        lambda u: up.on_version(u, "1.2.0", POLICY, NOW),
        lambda u: up.cancel(u, "stopped"),
    ]

    async def transitions() -> None:
        for _ in range(400):
            current = await store.get(f"r1:d{rng.randrange(45):05d}")
            assert current is not None
            change = rng.choice(steps)(current)
            if change.changed:
                await save(store, change, current.version)
            await asyncio.sleep(0)

    kills = 0

    async def killed_relays() -> None:
        nonlocal kills
        for _ in range(60):
            task = asyncio.create_task(relay.relay_once(limit=20))
            await asyncio.sleep(rng.random() * 0.02)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await task
            kills += task.cancelled()

    await asyncio.gather(transitions(), killed_relays())
    assert kills >= 10  # most passes were killed mid-way
    publisher.fail_rate = 0.0
    while await relay.relay_once(limit=100):
        pass

    recount = (await store.recount("r1"))[("EU", FC)]
    assert await progress.counts("r1", "EU", FC) == recount
    assert recount.targeted == 60
    assert recount.pending >= 15  # the planned-only ids
    assert recount.open + recount.succeeded + recount.failed + recount.cancelled == 60
    assert await db["upgrades"].count_documents({"relay": True}) == 0
    assert await db["plans"].count_documents({"relay": True}) == 0
    # every applied id is forgotten once its entry is gone and the grace is over
    late = OutboxRelay(counted, progress, publisher, grace_s=0, clock=lambda: NOW + timedelta(seconds=1))
    await late.sweep(counted)
    assert await progress.applied(10) == []
    assert await progress.counts("r1", "EU", FC) == recount


async def test_a_release_from_planning_to_success_with_counters_equal_to_a_recount(
    db: AsyncIOMotorDatabase[Document],
) -> None:
    tuya = FakeTuya(refuse={"d00002"})
    clock = [NOW]
    p = Ports(
        firmware=FirmwareStore(db),
        rollouts=RolloutStore(db),
        upgrades=UpgradeStore(db),
        plans=PlanStore(db),
        progress=ProgressStore(db),
        devices=DeviceStore(db),
        locks=LockStore(db),
        pacing=PacingStore(db),
        tuya=tuya,
        clock=lambda: clock[0],
        tenant="t",
        policy=POLICY,
    )
    relay = OutboxRelay(
        [db["upgrades"], db["plans"], db["sweeps"], db["rollouts"], db["firmware"]],
        ProgressStore(db),
        FakePublisher(),
        clock=lambda: clock[0],
    )
    devices = DeviceStore(db)
    await devices.record_many(
        [DeviceRecord(f"d{i:05d}", "p1", "EU", NOW - timedelta(days=1), {0: "1.1.0"}) for i in range(20)]
        + [DeviceRecord("d-new", "p1", "EU", NOW - timedelta(days=1), {0: "1.2.0"})]  # already on target
        + [DeviceRecord("d-us", "p1", "US", NOW - timedelta(days=1), {0: "1.1.0"})]
        + [DeviceRecord("d-10", "p1", "EU", NOW - timedelta(days=1), {0: "1.10"})]  # higher, numerically
    )
    while await devices.count_once():
        pass
    assert await devices.counts("p1", "EU", 0) == {"1.1.0": 20, "1.2.0": 1, "1.10": 1}
    spec = FirmwareSpec("p1", 0, "1.2.0", 1024, "a" * 32, "sig", "https://x/fw.bin", UpgradeType.SILENT, 60)
    fw = await handlers.register_firmware(spec, "ops", p)
    assert await handlers.register_firmware(spec, "ops", p) == fw
    plan = RegionPlan(
        "EU", canary=Canary(quantity=5), promote_at=Threshold(0.8, 4), halt_at=Threshold(0.5, 4)
    )
    await handlers.create_release("r1", fw.firmware_id, [plan], p)
    r = await handlers.start_rollout("r1", "EU", "ops", p)
    assert (r.status, r.stage) == (RolloutStatus.RUNNING, ReleaseStage.CANARY)
    with pytest.raises(Exception, match="stop them first"):
        await handlers.withdraw_firmware(fw.firmware_id, p)

    assert await handlers.dispatch("r1", "EU", 100, p) == 5
    assert await handlers.dispatch("r1", "EU", 100, p) == 0  # nothing commanded twice
    canary = [d for d, _ in tuya.commands]
    for d in canary:
        await handlers.on_device_progress(d, 0, T.DONE, 100, p)
        await handlers.on_device_version(d, 0, "1.2.0", p)
    while await relay.relay_once():
        pass
    counts = await p.progress.counts("r1", "EU", ReleaseStage.CANARY)
    assert (counts.targeted, counts.succeeded) == (5, len(canary))

    r = await handlers.evaluate_rollout("r1", "EU", p)
    assert r.stage == ReleaseStage.FULL
    while await relay.relay_once():  # the full stage's walk carries its estimate
        pass
    assert (await p.progress.counts("r1", "EU", FC)).targeted == 20  # the 20 lower (the canary's succeeded)

    clock[0] = NOW + timedelta(minutes=5)
    while await handlers.dispatch("r1", "EU", 100, p):
        pass
    while await relay.relay_once():  # the walk ended: it found 15, the canary's 5 already in the release
        pass
    assert (await p.progress.counts("r1", "EU", FC)).targeted == 15
    refused = await p.upgrades.get("r1:d00002")  # Tuya refuses it every time: retried, never succeeded
    assert refused is not None
    assert refused.state in (S.RETRYING, S.FAILED)
    for d, _ in tuya.commands[len(canary) :]:
        await handlers.on_device_version(d, 0, "1.2.0", p)
    while await relay.relay_once():
        pass
    for stage, c in (await UpgradeStore(db).recount("r1")).items():
        assert await p.progress.counts("r1", "EU", stage[1]) == c
    assert len(tuya.commands) == len(set(tuya.commands))  # never twice for one attempt


async def test_directory_counts_each_change_exactly_once_across_killed_passes(
    db: AsyncIOMotorDatabase[Document],
) -> None:
    """Directory writes keep coming while counting passes are cancelled at random awaits (a killed process)
    and run concurrently; at the end every bucket's count equals the entries in it."""
    devices = DeviceStore(db, grace_s=0.4)
    rng = random.Random(5)
    versions = ["1.0", "1.1", "1.2", "2.0"]

    async def writes() -> None:
        for _ in range(40):
            batch = [
                DeviceRecord(f"d{rng.randrange(60):03d}", "p1", "EU", NOW, {0: rng.choice(versions)})
                for _ in range(rng.randrange(1, 6))
            ]
            await devices.record_many(batch)
            await asyncio.sleep(0)

    kills = 0

    async def killed_passes() -> None:
        nonlocal kills
        for _ in range(40):
            task = asyncio.create_task(devices.count_once(limit=7))
            await asyncio.sleep(rng.random() * 0.01)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            kills += task.cancelled()

    await asyncio.gather(writes(), killed_passes(), killed_passes())
    assert kills >= 5
    for _ in range(100):  # a batch a killed pass left is finished after the grace
        busy = await devices.count_once() or await db["counting"].count_documents({"batch": {"$ne": None}})
        if not busy and not await db["devices"].count_documents({"dirty": True}):
            break
        await asyncio.sleep(0.1)
    truth: dict[str, int] = {}
    async for d in db["devices"].find({}, {"version": 1}):
        truth[d["version"]] = truth.get(d["version"], 0) + 1
    counted = await devices.counts("p1", "EU", 0)
    assert {v: n for v, n in counted.items() if n} == truth
    assert await db["devices"].count_documents({"dirty": True}) == 0


async def test_a_walk_pages_the_directory_from_an_index_in_position_order(
    db: AsyncIOMotorDatabase[Document],
) -> None:
    devices = DeviceStore(db)
    await devices.record_many(
        [DeviceRecord(f"d{i:03d}", "p1", "EU", NOW, {0: "1.0" if i % 2 else "1.1"}) for i in range(120)]
    )
    buckets = [bucket("p1", "EU", 0, "1.0"), bucket("p1", "EU", 0, "1.1")]
    seen: list[str] = []
    after = ""
    while True:
        page, more = await devices.page(buckets, after, None, 25)
        seen += [e.position for e in page]
        if not more:
            break
        after = page[-1].position
    assert seen == sorted(position(f"d{i:03d}", 0) for i in range(120))
    middle = seen[60]
    first, _ = await devices.page(buckets, "", middle, 1000)
    assert [e.position for e in first] == seen[:60]
    reply = await explain.plan(
        db, "devices", {"bucket": buckets[0], "_id": {"$gt": ""}}, sort={"_id": 1}, limit=25
    )
    assert explain.answered_from_index(reply, sorted_and_limited=True)
