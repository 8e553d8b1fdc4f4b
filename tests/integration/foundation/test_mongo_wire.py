"""motor against the real MongoDB-wire server: the guarantees the services build on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from motor.motor_asyncio import AsyncIOMotorClient, AsyncIOMotorDatabase
from pymongo import UpdateOne
from pymongo.errors import DuplicateKeyError, OperationFailure

from fleet_shared.mongo import clear_relayed, find_one_and_upsert, pull_relayed
from tests.support import Stack

pytestmark = pytest.mark.integration


@pytest.fixture
async def db(stack: Stack, unique: str) -> AsyncIterator[AsyncIOMotorDatabase[dict[str, object]]]:
    client: AsyncIOMotorClient[dict[str, object]] = AsyncIOMotorClient(stack.mongodb_uri, tz_aware=True)
    database = client[f"fleet_test_{unique}"]
    yield database
    await client.drop_database(database.name)
    client.close()


async def test_unique_index_is_enforced(db: AsyncIOMotorDatabase[dict[str, object]]) -> None:
    tokens = db["pairing_tokens"]
    await tokens.create_index("token", unique=True)
    await tokens.insert_one({"token": "AYabc", "home_id": "h1"})
    with pytest.raises(DuplicateKeyError):
        await tokens.insert_one({"token": "AYabc", "home_id": "h2"})
    assert await tokens.count_documents({}) == 1


async def test_upsert_is_atomic_under_50_concurrent_tasks(
    db: AsyncIOMotorDatabase[dict[str, object]],
) -> None:
    quotas = db["quotas"]

    async def take_one() -> int:
        doc = await find_one_and_upsert(quotas, {"_id": "operator-1:2026-11-21"}, {"$inc": {"used": 1}})
        return int(doc["used"])

    seen = await asyncio.gather(*(take_one() for _ in range(50)))
    # every task saw its own increment: no lost update, no double upsert
    assert sorted(seen) == list(range(1, 51))
    assert await quotas.count_documents({}) == 1
    assert (await quotas.find_one({"_id": "operator-1:2026-11-21"}) or {})["used"] == 50


async def test_conditional_update_applies_once(db: AsyncIOMotorDatabase[dict[str, object]]) -> None:
    """The optimistic-concurrency pattern handlers use: only one of many racing writers wins a version."""
    shadows = db["shadows"]
    await shadows.insert_one({"_id": "dev1", "version": 1})

    async def bump() -> bool:
        result = await shadows.update_one({"_id": "dev1", "version": 1}, {"$set": {"version": 2}})
        return result.modified_count == 1

    wins = await asyncio.gather(*(bump() for _ in range(50)))
    assert wins.count(True) == 1


async def test_expiry_field_is_honoured_by_queries(db: AsyncIOMotorDatabase[dict[str, object]]) -> None:
    """Expired documents are invisible to queries even before any TTL monitor removes them."""
    tokens = db["pairing_tokens"]
    now = datetime.now(UTC)
    await tokens.insert_many(
        [
            {"token": "live", "expires_at": now + timedelta(minutes=10)},
            {"token": "dead", "expires_at": now - timedelta(seconds=1)},
        ]
    )
    live = [doc["token"] async for doc in tokens.find({"expires_at": {"$gt": now}})]
    assert live == ["live"]
    stored = await tokens.find_one({"token": "live"})
    assert stored is not None
    assert abs(stored["expires_at"] - (now + timedelta(minutes=10))) < timedelta(milliseconds=1)  # type: ignore[operator]


async def test_a_big_update_command_applies_or_is_refused_but_never_hangs(
    db: AsyncIOMotorDatabase[dict[str, object]],
) -> None:
    """150 statements in one `update` command: MongoDB applies them; the local FerretDB 1.24 would wait
    forever for a pooled connection, so its front refuses the command with a clear error instead."""
    docs = db["big_update"]
    await docs.insert_many([{"_id": i, "n": 0} for i in range(150)])
    build = await db.client.admin.command("buildInfo")
    command = docs.bulk_write([UpdateOne({"_id": i}, {"$set": {"n": 1}}) for i in range(150)])
    if "ferretdbVersion" not in build:
        assert (await asyncio.wait_for(command, 30)).modified_count == 150
        return
    with pytest.raises(OperationFailure, match="refused"):
        await asyncio.wait_for(command, 30)
    assert await docs.count_documents({"n": 1}) == 0
    # the server still writes afterwards (the refused command held no lock)
    await docs.update_one({"_id": 0}, {"$set": {"n": 2}})
    assert (await docs.find_one({"_id": 0}) or {})["n"] == 2


class Entry:
    """An outbox entry as a service stores it."""

    def __init__(self, event_id: str, seq: int) -> None:
        self.event_id, self.seq = event_id, seq

    def to_document(self) -> dict[str, object]:
        return {"event_id": self.event_id, "seq": self.seq}


async def test_relayed_outbox_entries_go_and_those_appended_since_stay(
    db: AsyncIOMotorDatabase[dict[str, object]],
) -> None:
    """The services' outbox relays: exactly the relayed entries leave, whatever was appended meanwhile."""
    docs = db["sessions"]
    relayed = {name: [Entry(f"{name}-e1", 1), Entry(f"{name}-e2", 2)] for name in ("s1", "s2", "s3")}
    await docs.insert_many(
        [{"_id": name, "outbox": [e.to_document() for e in entries]} for name, entries in relayed.items()]
    )
    # a write appended s1's next event after the relay read its outbox
    await docs.update_one({"_id": "s1"}, {"$push": {"outbox": Entry("s1-e3", 3).to_document()}})

    await clear_relayed(docs, [("s1", relayed["s1"]), ("s2", relayed["s2"]), ("s3", [])])
    await docs.update_one({"_id": "s3"}, pull_relayed(relayed["s3"][:1]))

    outboxes = {d["_id"]: d["outbox"] async for d in docs.find({})}
    assert outboxes == {
        "s1": [{"event_id": "s1-e3", "seq": 3}],
        "s2": [],
        "s3": [{"event_id": "s3-e2", "seq": 2}],
    }
    await clear_relayed(docs, [])  # nothing relayed: no command at all
