"""ota's device directory on the real MongoDB-wire server: a fresh directory is counted as it is inserted (one
`$inc` per bucket per thousand entries), and its counts equal a recount of the entries after a writer dies at
every step of an insert batch (an exception injected at the step, or a SIGKILLed process) while devices change
version meanwhile."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from motor.motor_asyncio import AsyncIOMotorDatabase

from fleet_ota.adapters import mongo
from fleet_ota.adapters.mongo import DeviceStore, Document
from fleet_ota.domain.targeting import DeviceRecord
from tests.support import Stack

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 29, 12, tzinfo=UTC)
VERSIONS = ("1.0.0", "1.1.0", "1.2.0")
Db = AsyncIOMotorDatabase[Document]


class Crash(Exception):
    """The writer's process died here."""


def fleet(first: int, n: int, *, version: str | None = None, seed: int = 1) -> list[DeviceRecord]:
    rng = random.Random(seed)
    return [
        DeviceRecord(
            f"dev{i:06d}",
            "p1",
            "EU" if i % 3 else "US",
            NOW - timedelta(days=1),
            {0: version or rng.choice(VERSIONS), **({9: "0.9"} if i % 5 == 0 else {})},
        )
        for i in range(first, first + n)
    ]


async def recount(db: Db) -> dict[str, int]:
    return dict(Counter([d["bucket"] async for d in db["devices"].find({}, {"bucket": 1})]))


async def counted(db: Db) -> dict[str, int]:
    return {d["_id"]: d["count"] async for d in db["device_counts"].find({}) if d["count"]}


async def settle(store: DeviceStore, db: Db, within: float = 60.0) -> None:
    """Counting passes until nothing is left to count (a dead writer's batch after the grace)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        await store.count_once()
        if not await db["counting"].count_documents({"kind": "insert"}) and not await db[
            "devices"
        ].count_documents({"dirty": True}):
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the directory was not counted in time")


async def test_a_fresh_directory_is_counted_as_it_is_inserted_and_changes_once_each(db: Db) -> None:
    store = DeviceStore(db)
    devices = fleet(0, 3000)
    await store.record_many(devices)
    # counted as inserted: no counting pass, nothing dirty, no batch left
    assert await counted(db) == await recount(db)
    assert sum((await counted(db)).values()) == 3000 + 600
    assert await db["devices"].count_documents({"dirty": True}) == 0
    assert await db["counting"].count_documents({}) == 0
    # a repeat (an inventory imported again) writes nothing; changed versions are counted once each
    await store.record_many(devices)
    assert await db["devices"].count_documents({"dirty": True}) == 0
    assert await db["devices"].count_documents({"v": {"$ne": 1}}) == 0
    await store.record_many(devices[:500] + fleet(500, 700, version="2.0.0") + fleet(3000, 300))
    while await store.count_once():
        pass
    assert await counted(db) == await recount(db)
    eu = await store.counts("p1", "EU", 0)
    assert eu["2.0.0"] == sum(1 for i in range(500, 1200) if i % 3)
    assert await db["devices"].count_documents({"dirty": True}) == 0


@pytest.mark.parametrize("step", ["inserting", "before_seal", "applying"])
async def test_an_insert_batch_its_writer_left_is_counted_once_after_the_grace(
    db: Db, step: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer dies while inserting a batch's entries, after inserting them (before their sums are sealed:
    the entries say counted, the counts do not yet) or after applying one bucket's sum; devices of the batch
    change version meanwhile. A pass within the grace leaves the batch to its writer; after it, one pass
    finishes the batch and the counts equal a recount."""
    grace = 4.0  # the checks within it stay within it on a loaded machine
    writer = DeviceStore(db, grace_s=grace)
    await writer.record_many(fleet(0, 200))  # counted already: the batch adds to these
    original = mongo._insert_ignoring_duplicates

    async def half_then_die(col: mongo.Collection, docs: Sequence[Document]) -> set[int]:
        await original(col, docs[: len(docs) // 2])
        raise Crash

    async def die(*_: Any) -> None:
        raise Crash

    if step == "inserting":
        monkeypatch.setattr(mongo, "_insert_ignoring_duplicates", half_then_die)
    elif step == "before_seal":
        monkeypatch.setattr(writer, "_settle_insert", die)
    else:
        applied = writer._apply

        async def one_bucket_then_die(b: str, totals: Sequence[Document], began: float) -> None:
            await applied(b, totals[:1], began)
            raise Crash

        monkeypatch.setattr(writer, "_apply", one_bucket_then_die)
    with pytest.raises(Crash):
        await writer.record_many(fleet(200, 800))  # 960 entries: one batch
    monkeypatch.undo()
    assert await db["counting"].count_documents({"kind": "insert"}) == 1
    assert await counted(db) != await recount(db)  # the entries say counted, the counts do not (yet)
    # devices of the dead batch change version before it is finished (inserted ones: written as changes)
    other = DeviceStore(db, grace_s=grace)
    await other.record_many(fleet(200, 100, version="2.0.0") + fleet(1000, 100, version="2.0.0"))
    before = await db["counting"].find_one({"kind": "insert"})
    assert before is not None
    await other.count_once()  # within the grace: the batch is its writer's
    assert await db["counting"].find_one({"_id": before["_id"]}) is not None
    await asyncio.sleep(grace)
    await settle(other, db)
    truth = await recount(db)
    assert await counted(db) == truth
    # every device of the dead batch is in the directory (what its writer did not insert, the pass did)
    assert sum(truth.values()) == 1100 + 220
    await other.count_once()  # a repeat adds nothing
    assert await counted(db) == truth


WRITER = """
import asyncio, random, sys
from datetime import UTC, datetime, timedelta
from motor.motor_asyncio import AsyncIOMotorClient
from fleet_ota.adapters.mongo import DeviceStore
from fleet_ota.domain.targeting import DeviceFact, DeviceRecord

uri, name, first, n, grace = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])

async def main() -> None:
    store = DeviceStore(AsyncIOMotorClient(uri, tz_aware=True)[name], grace_s=grace)
    rng = random.Random(first)
    at = datetime(2026, 11, 29, tzinfo=UTC)
    for i in range(first, first + n, 1500):
        batch = [
            DeviceRecord(f"dev{j:06d}", "p1", "EU", at, {0: rng.choice(["1.0.0", "1.1.0", "1.2.0"])})
            for j in range(i, min(i + 1500, first + n))
        ]
        await store.record_many(batch)
    print("done", flush=True)

asyncio.run(main())
"""


async def test_counts_equal_a_recount_after_importing_processes_are_sigkilled_mid_batch(
    db: Db, stack: Stack, tmp_path: Path
) -> None:
    """An importing process (record_many, 1,500 devices a call: two insert batches) is SIGKILLed as soon as
    one of its batches is under way, four times, while the test's own writer changes versions of the
    devices being imported and counting passes run; after the grace the counts equal a recount."""
    grace = 3.0
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    store = DeviceStore(db, grace_s=grace)
    rng = random.Random(11)
    killed_mid_batch = 0
    for round_ in range(4):
        first = round_ * 3000
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            str(script),
            stack.mongodb_uri,
            db.name,
            str(first),
            "3000",
            str(grace),
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ},
        )
        try:
            # wait for a batch under way, then a little (0-300 ms: somewhere in its steps)
            deadline = time.monotonic() + 60
            while not await db["counting"].count_documents({"kind": "insert"}):
                assert time.monotonic() < deadline, "the writer never began"
                await asyncio.sleep(0.01)
            await asyncio.sleep(rng.random() * 0.3)
            # devices being imported change version meanwhile (those already in: written as changes)
            changes = [
                DeviceRecord(f"dev{j:06d}", "p1", "EU", NOW, {0: "2.0.0"})
                for j in rng.sample(range(first, first + 3000), 200)
            ]
            await asyncio.gather(store.record_many(changes), store.count_once())
        finally:
            if child.returncode is None:
                child.send_signal(signal.SIGKILL)
            await child.wait()
        killed_mid_batch += child.returncode == -signal.SIGKILL and bool(
            await db["counting"].count_documents({"kind": "insert"})
        )
    assert killed_mid_batch >= 1  # at least one kill left a batch for the passes to finish
    await asyncio.sleep(grace)
    await settle(store, db)
    truth = await recount(db)
    assert await counted(db) == truth
    assert await db["devices"].count_documents({"dirty": True}) == 0


async def test_a_device_heard_from_through_another_regions_project_keeps_its_region(db: Db) -> None:
    """The scale-out e2e's lost plugs: every event carries its project's data center (`eu`); an us plug heard
    from mid-rollout had its versions fetched into eu's bucket, out of reach of us's walk. A known device
    keeps its region and bucket; a device first heard of takes the event's; `refreshing` sees a late joiner
    whose versions are still to be fetched."""
    store = DeviceStore(db)
    await store.record_many(fleet(0, 30))  # dev000000, dev000003, ... are US
    await store.learn("dev000003", "p1", "eu", NOW, activated=False, changed=False)  # presence
    await store.learn("new1", "p1", "eu", NOW + timedelta(minutes=5), activated=True, changed=True)
    assert await store.refreshing("p1", "eu", NOW + timedelta(minutes=1))
    assert not await store.refreshing("p1", "eu", NOW + timedelta(minutes=5))
    assert not await store.refreshing("p1", "US", NOW - timedelta(days=9))
    facts = {f.device_id: f for f in await store.to_refresh(10)}
    assert set(facts) == {"dev000003", "new1"}
    before = (await store.of_devices(["dev000003"]))[0]
    await store.refreshed(facts["dev000003"], {0: "1.0.0"})
    await store.refreshed(facts["new1"], {0: "1.0.0"})
    after = (await store.of_devices(["dev000003"]))[0]
    assert (after.region, after.activated_at, after.versions) == ("US", before.activated_at, {0: "1.0.0"})
    assert (await store.of_devices(["new1"]))[0].region == "eu"
    assert not await store.refreshing("p1", "eu", NOW)
    await settle(store, db)
    assert await counted(db) == await recount(db)
    assert "p1|eu|0|1.0.0" in await counted(db)
    assert (await store.counts("p1", "eu", 0)) == {"1.0.0": 1}
