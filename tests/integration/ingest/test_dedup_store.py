"""ingest's store of seen message keys on the real MongoDB-wire server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from motor.motor_asyncio import AsyncIOMotorClient, AsyncIOMotorDatabase

from fleet_ingest.adapters.dedup_store import LOOKUP_CHUNK, MongoDedupStore
from tests.support import Stack

pytestmark = pytest.mark.integration


@pytest.fixture
async def db(stack: Stack, unique: str) -> AsyncIterator[AsyncIOMotorDatabase[Any]]:
    client: AsyncIOMotorClient[Any] = AsyncIOMotorClient(stack.mongodb_uri, tz_aware=True)
    database = client[f"fleet_test_{unique}"]
    yield database
    await client.drop_database(database.name)
    client.close()


async def test_seen_finds_exactly_the_recorded_keys_across_lookup_chunks(
    db: AsyncIOMotorDatabase[Any],
) -> None:
    store = MongoDedupStore(db, access_id="access-a", ttl=timedelta(hours=1))
    await store.setup()
    recorded = [f"m{i}" for i in range(0, 3 * LOOKUP_CHUNK, 2)]  # every other key of three chunks
    await store.record(recorded)
    await store.record(recorded[:10] + recorded[:10])  # recording again is not an error

    asked = [f"m{i}" for i in range(3 * LOOKUP_CHUNK)]
    assert await store.seen(asked) == set(recorded)
    assert await store.seen([]) == set()
    # keys are per Tuya project: another access id has seen none of them
    other = MongoDedupStore(db, access_id="access-b", ttl=timedelta(hours=1))
    assert await other.seen(asked) == set()


async def test_expired_keys_are_forgotten(db: AsyncIOMotorDatabase[Any]) -> None:
    store = MongoDedupStore(db, access_id="access-a", ttl=timedelta(seconds=-1))
    await store.setup()
    await store.record(["old"])
    fresh = MongoDedupStore(db, access_id="access-a", ttl=timedelta(hours=1))
    await fresh.setup()
    await fresh.record(["new"])
    await fresh.expire()
    seen = await fresh.seen(["old", "new"])
    if fresh._server_expires:  # MongoDB's TTL monitor removes "old" within a minute; not waited for here
        assert "new" in seen
    else:  # the store expires keys itself (FerretDB has no TTL indexes)
        assert seen == {"new"}
