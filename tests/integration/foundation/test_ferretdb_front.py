"""The local FerretDB as the stack builds it (infra/ferretdb, fleet_devstack.ferretdb_patch): every collection
has the `_id` index FerretDB 1.24's lookups can use, and `_id` conditions are pushed down to SQLite whatever
else the filter holds. Runs its own server on a scratch data folder, so the SQLite files can be inspected."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
from collections.abc import AsyncIterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId
from motor.motor_asyncio import AsyncIOMotorClient

from fleet_devstack.build import ferretdb_binary
from fleet_devstack.config import StackConfig
from tests.support import free_port, stop_process

pytestmark = pytest.mark.integration

# the statements FerretDB 1.24 runs for `_id` conditions (backends/sqlite/collection.go)
LOOKUP = "SELECT _ferretdb_sjson FROM {table} WHERE _ferretdb_sjson->'$._id' = ?"
LOOKUP_IN = "SELECT _ferretdb_sjson FROM {table} WHERE _ferretdb_sjson->'$._id' IN (?, ?)"


@pytest.fixture
async def ferretdb(tmp_path: Path) -> AsyncIterator[tuple[AsyncIOMotorClient[dict[str, object]], Path]]:
    port = free_port()
    binary = ferretdb_binary(StackConfig.load("test"))
    data = tmp_path / "data"
    log = (tmp_path / "ferretdb.log").open("wb")
    proc = subprocess.Popen(  # noqa: ASYNC220 - starting a server takes microseconds; it is awaited below
        [str(binary), "-listen-addr", f"127.0.0.1:{port}", "-data-dir", str(data)], stdout=log, stderr=log
    )
    client: AsyncIOMotorClient[dict[str, object]] = AsyncIOMotorClient(
        f"mongodb://127.0.0.1:{port}/", serverSelectionTimeoutMS=15_000
    )
    try:
        yield client, data
    finally:
        client.close()
        stop_process(proc)
        log.close()


def lookup_plan(data: Path, db: str, collection: str, statement: str = LOOKUP) -> str:
    """SQLite's plan for the statement (read from the file: FerretDB's `explain` can show a pooled
    connection's plan from before the index existed, though its queries use the index)."""
    # closed at once: a connection left open to a dropped database's file breaks FerretDB's re-creating it
    with closing(sqlite3.connect(f"file:{data / (db + '.sqlite')}?mode=ro", uri=True)) as conn:
        (table,) = conn.execute(
            "SELECT table_name FROM _ferretdb_collections WHERE name = ?", (collection,)
        ).fetchone()
        sql = f"EXPLAIN QUERY PLAN {statement.format(table=table)}"
        plan = conn.execute(sql, ('"d1"',) * statement.count("?")).fetchall()
    return " ".join(str(row[-1]) for row in plan)


async def test_id_lookups_use_an_index_in_every_collection(
    ferretdb: tuple[AsyncIOMotorClient[dict[str, object]], Path],
) -> None:
    client, data = ferretdb
    shadows = client["fleet"]["shadows"]
    await shadows.insert_many([{"_id": f"d{i}", "v": i} for i in range(50)])
    await client["fleet"]["dedup"].update_one({"_id": "k1"}, {"$set": {"seen": 1}}, upsert=True)

    assert "USING INDEX" in lookup_plan(data, "fleet", "shadows")
    assert "USING INDEX" in lookup_plan(data, "fleet", "dedup")
    # lookups, updates and deletes by _id still behave
    assert (await shadows.find_one({"_id": "d7"}) or {})["v"] == 7
    assert (await shadows.update_one({"_id": "d7"}, {"$set": {"v": 70}})).modified_count == 1
    assert (await shadows.delete_one({"_id": "d8"})).deleted_count == 1
    assert await shadows.count_documents({}) == 49

    # a dropped and re-created collection gets the index again
    await shadows.drop()
    await shadows.insert_one({"_id": "d1"})
    assert "USING INDEX" in lookup_plan(data, "fleet", "shadows")
    # so does a collection of a dropped and re-created database (a new SQLite file)
    await client.drop_database("fleet")
    await client["fleet"]["dedup"].insert_one({"_id": "k2"})
    assert "USING INDEX" in lookup_plan(data, "fleet", "dedup")
    # FerretDB's own view of the indexes is unchanged
    assert [i["name"] for i in await client["fleet"]["dedup"].list_indexes().to_list(None)] == ["_id_"]


async def test_id_conditions_are_pushed_down_whatever_else_the_filter_holds(
    ferretdb: tuple[AsyncIOMotorClient[dict[str, object]], Path],
) -> None:
    client, data = ferretdb
    db = client["fleet"]
    shadows = db["shadows"]
    await shadows.insert_many([{"_id": f"d{i}", "version": i} for i in range(50)])
    await shadows.insert_one({"_id": 7, "version": 7})

    async def pushed_down(condition: dict[str, object]) -> bool:
        reply = await db.command("explain", {"find": "shadows", "filter": condition})
        return bool(reply["filterPushdown"])

    assert await pushed_down({"_id": "d7", "version": 7})
    assert await pushed_down({"_id": {"$in": ["d1", "d2"]}})
    assert not await pushed_down({"version": 7})
    assert not await pushed_down({"_id": {"$in": ["d1", 7]}})  # only strings and ObjectIds
    assert not await pushed_down({"_id": {"$ne": "d1"}})
    assert "USING INDEX" in lookup_plan(data, "fleet", "shadows", LOOKUP_IN)

    # the rest of the filter still applies: a conditional write is a compare-and-set
    assert (await shadows.replace_one({"_id": "d7", "version": 6}, {"version": 8})).matched_count == 0
    assert (await shadows.replace_one({"_id": "d7", "version": 7}, {"version": 8})).matched_count == 1
    assert (await shadows.find_one({"_id": "d7"}) or {})["version"] == 8
    assert await shadows.count_documents({"_id": "d7", "version": 7}) == 0
    assert (await shadows.delete_one({"_id": "d9", "version": 1})).deleted_count == 0
    found = await shadows.find({"_id": {"$in": ["d1", "d2", "missing"]}}).sort("_id").to_list(None)
    assert [d["_id"] for d in found] == ["d1", "d2"]
    mixed = await shadows.find({"_id": {"$in": ["d3", 7]}}).to_list(None)
    assert sorted(str(d["_id"]) for d in mixed) == ["7", "d3"]


async def test_string_ranges_of_id_are_answered_from_an_index_and_match_exactly_what_mongodb_matches(
    ferretdb: tuple[AsyncIOMotorClient[dict[str, object]], Path],
) -> None:
    client, _ = ferretdb
    db = client["fleet"]
    buckets = db["buckets"]
    await buckets.insert_many([{"_id": f"{h:03d}|d{i}"} for h in range(5) for i in range(3)])
    # other types in the same collection: a string bound matches strings only
    await buckets.insert_many(
        [{"_id": 7}, {"_id": ObjectId("000000000000000000000001")}, {"_id": {"a": "001"}}]
    )
    await buckets.insert_many([{"_id": "001 "}, {"_id": "001!"}])  # sort before `|` bytewise

    reply = await db.command("explain", {"find": "buckets", "filter": {"_id": {"$lt": "002|"}}})
    assert reply["filterPushdown"]
    assert "USING INDEX" in " ".join(reply["queryPlanner"]["Plan"])
    below = await buckets.find({"_id": {"$lt": "002|"}}).to_list(None)
    assert sorted(str(d["_id"]) for d in below) == [
        "000|d0", "000|d1", "000|d2", "001 ", "001!", "001|d0", "001|d1", "001|d2",
    ]  # fmt: skip
    between = await buckets.find({"_id": {"$gte": "001|", "$lte": "001|d1"}}).to_list(None)
    assert sorted(str(d["_id"]) for d in between) == ["001|d0", "001|d1"]
    assert (await buckets.delete_many({"_id": {"$gt": "003|"}})).deleted_count == 6
    assert await buckets.count_documents({}) == 14
    # a bound of another type is not pushed down (and still filters)
    reply = await db.command("explain", {"find": "buckets", "filter": {"_id": {"$gt": 6}}})
    assert not reply["filterPushdown"]
    assert [d["_id"] async for d in buckets.find({"_id": {"$gt": 6}})] == [7]


async def test_pages_of_indexed_equality_filters_are_sorted_and_limited_in_sqlite_and_stay_exact(
    ferretdb: tuple[AsyncIOMotorClient[dict[str, object]], Path],
) -> None:
    client, _ = ferretdb
    db = client["fleet"]
    devices = db["devices"]
    await devices.create_index([("product", 1), ("_id", 1)])
    await devices.create_index([("state.online", 1), ("_id", 1)])
    await devices.insert_many(
        [{"_id": f"d{i:03d}", "product": f"p{i % 3}", "state": {"online": i % 2 == 0}} for i in range(300)]
    )
    # values MongoDB does not take for "p1" / true: a number, a string "true", an ObjectId-typed id
    await devices.insert_many(
        [{"_id": "x1", "product": 1, "state": {"online": 1}}, {"_id": "x2", "state": "true"}]
    )
    await devices.insert_one({"_id": ObjectId("000000000000000000000001"), "product": "p1"})

    async def page(
        filter_: dict[str, object], limit: int = 5, order: int = 1
    ) -> tuple[list[object], dict[str, Any]]:
        find = {"find": "devices", "filter": filter_, "sort": {"_id": order}, "limit": limit}
        reply = await db.command("explain", find)
        docs = await devices.find(filter_).sort("_id", order).limit(limit).to_list(None)
        return [d["_id"] for d in docs], reply

    ids, reply = await page({"product": "p1", "_id": {"$gte": ""}})
    assert ids == ["d001", "d004", "d007", "d010", "d013"]
    assert (reply["filterPushdown"], reply["sortPushdown"], reply["limitPushdown"]) == (True, True, True)
    assert "USING INDEX" in " ".join(reply["queryPlanner"]["Plan"])
    ids, _ = await page({"product": "p1", "state.online": True, "_id": {"$gt": "d001"}}, order=-1)
    assert ids == ["d298", "d292", "d286", "d280", "d274"]
    ids, _ = await page({"state.online": True, "_id": {"$gte": "d290"}})
    assert ids == ["d290", "d292", "d294", "d296", "d298"]
    # without a string bound on `_id` the order is MongoDB's across types: sorted in Go, as before
    ids, reply = await page({"product": "p1"}, limit=2)
    assert ids == ["d001", "d004"]
    assert not reply["sortPushdown"]

    # once a document holds an array on a filtered path, MongoDB matches its elements: no exact pushdown
    await devices.insert_one({"_id": "a1", "product": ["p1", "p2"]})
    ids, reply = await page({"product": "p1", "_id": {"$gte": "a"}}, limit=2)
    assert ids == ["a1", "d001"]
    assert not reply["limitPushdown"]
    await devices.delete_one({"_id": "a1"})
    await devices.insert_one({"_id": "a2", "state": [{"online": True}]})
    ids, reply = await page({"state.online": True, "_id": {"$gte": "a"}}, limit=2)
    assert ids == ["a2", "d000"]
    assert not reply["limitPushdown"]
    await devices.delete_one({"_id": "a2"})
    _, reply = await page({"state.online": True, "_id": {"$gte": "a"}}, limit=2)
    assert reply["limitPushdown"]


async def test_concurrent_conditional_updates_of_one_document_never_lose_an_update(
    ferretdb: tuple[AsyncIOMotorClient[dict[str, object]], Path],
) -> None:
    """The front runs writes one at a time: FerretDB 1.x alone loses concurrent updates (its update is a read,
    then a write), and concurrent writes to one SQLite file fail with SQLITE_BUSY (measured), so finer locks
    (per document) are not an option with this backend."""
    client, _ = ferretdb
    counters = client["fleet"]["counters"]
    await counters.insert_one({"_id": "c", "n": 0, "version": 0})

    await asyncio.gather(*(counters.update_one({"_id": "c"}, {"$inc": {"n": 1}}) for _ in range(50)))

    async def bump(worker: int) -> int:
        """Compare-and-set on `version` until 5 bumps of this worker landed; returns the lost races."""
        landed = lost = 0
        while landed < 5:
            doc = await counters.find_one({"_id": "c"})
            assert doc is not None
            version = int(str(doc["version"]))
            result = await counters.update_one(
                {"_id": "c", "version": version}, {"$set": {"version": version + 1, f"w{worker}": landed + 1}}
            )
            landed, lost = (landed + 1, lost) if result.modified_count else (landed, lost + 1)
        return lost

    await asyncio.gather(*(bump(w) for w in range(10)))
    doc = await counters.find_one({"_id": "c"})
    assert doc is not None
    assert doc["n"] == 50
    assert doc["version"] == 50  # every compare-and-set that reported success is there, none twice
    assert all(doc[f"w{w}"] == 5 for w in range(10))


async def test_the_write_ahead_log_is_checkpointed_between_writes_and_truncated_when_idle(
    ferretdb: tuple[AsyncIOMotorClient[dict[str, object]], Path],
) -> None:
    """FerretDB keeps an update's read open across its commit, so with SQLite's own checkpoints the log never
    restarted: it grew with every write (a 930 MB log was seen) and was checkpointed at nearly every commit.
    The front checkpoints between writes (infra/ferretdb/checkpoint.go): the log stays a few MB under steady
    conditional writes, is emptied once they stop, and every write is there."""
    client, data = ferretdb
    shadows = client["fleet"]["shadows"]
    pad = "x" * 1000
    await shadows.insert_many([{"_id": f"d{i:04d}", "version": 0, "pad": pad} for i in range(500)])
    wal = data / "fleet.sqlite-wal"
    biggest = 0
    for version in range(4):  # 2,000 conditional replaces of ~1 KB documents, ~40 MB of pages written
        for start in range(0, 500, 50):
            await asyncio.gather(
                *(
                    shadows.replace_one(
                        {"_id": f"d{i:04d}", "version": version}, {"version": version + 1, "pad": pad}
                    )
                    for i in range(start, start + 50)
                )
            )
            biggest = max(biggest, wal.stat().st_size)
    assert biggest < 16 << 20, f"the log grew to {biggest} bytes"
    await asyncio.sleep(2)  # idle: the front checkpoints and truncates
    assert wal.stat().st_size == 0
    assert await shadows.count_documents({"version": 4}) == 500
    with closing(sqlite3.connect(f"file:{data / 'fleet.sqlite'}?mode=ro", uri=True)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


async def test_number_and_date_ranges_on_indexed_fields_are_answered_from_an_index_and_stay_exact(
    ferretdb: tuple[AsyncIOMotorClient[dict[str, object]], Path],
) -> None:
    client, _ = ferretdb
    db = client["fleet"]
    docs = db["docs"]
    await docs.create_index([("p.deadline", 1)])
    await docs.create_index([("at", 1)])
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    values: list[object] = [5, 2**40, 7.5, True, "6", None, t0]
    await docs.insert_many([{"_id": f"v{i}", "p": {"deadline": v}, "at": v} for i, v in enumerate(values)])
    await docs.insert_many(
        [{"_id": "none"}, *({"_id": f"t{h}", "at": t0 + timedelta(hours=h)} for h in range(1, 4))]
    )

    async def found(filter_: dict[str, object]) -> tuple[list[object], dict[str, Any]]:
        reply = await db.command("explain", {"find": "docs", "filter": filter_, "limit": 100})
        return sorted([str(d["_id"]) async for d in docs.find(filter_)]), reply

    ids, reply = await found({"p.deadline": {"$lte": 2**41}})
    assert ids == ["v0", "v1", "v2"]  # numbers only: not true, not "6", not a date
    assert reply["filterPushdown"]
    assert "USING INDEX" in " ".join(reply["queryPlanner"]["Plan"])
    assert (await found({"p.deadline": {"$gt": 5, "$lt": 8}}))[0] == ["v2"]
    ids, reply = await found({"at": {"$gte": t0 + timedelta(hours=1), "$lt": t0 + timedelta(hours=3)}})
    assert ids == ["t1", "t2"]
    assert reply["filterPushdown"]
    assert (await found({"at": {"$lt": t0 + timedelta(hours=2)}}))[0] == ["t1", "v6"]
    assert not (await found({"at": {"$lt": 5, "$gt": t0}}))[1]["filterPushdown"]  # mixed kinds: Go decides
    await docs.insert_one({"_id": "arr", "p": {"deadline": [1, 100]}})  # MongoDB matches array elements
    ids, reply = await found({"p.deadline": {"$lte": 3}})
    assert ids == ["arr"]
    assert not reply["limitPushdown"]


async def test_a_limit_with_a_sort_the_backend_cannot_run_is_applied_after_sorting(
    ferretdb: tuple[AsyncIOMotorClient[dict[str, object]], Path],
) -> None:
    client, _ = ferretdb
    sessions = client["fleet"]["sessions"]
    await sessions.create_index([("owner", 1), ("_id", 1)])
    await sessions.insert_many([{"_id": f"s{i}", "owner": f"o{i % 2}", "at": i} for i in range(7)])
    newest = sessions.find({}).sort([("at", -1), ("_id", -1)]).limit(3)
    assert [d["_id"] async for d in newest] == ["s6", "s5", "s4"]
    newest_of_owner = sessions.find({"owner": "o0"}).sort("at", -1).limit(2)
    assert [d["_id"] async for d in newest_of_owner] == ["s6", "s4"]
    by_id = sessions.find({"owner": "o1", "_id": {"$gte": ""}}).sort("_id", -1).limit(2)
    assert [d["_id"] async for d in by_id] == ["s5", "s3"]
