"""DP history in hourly buckets on the real MongoDB-wire server: one document per device and hour, a replay
(whole or partial) adds nothing, pages cross hours in order, retention deletes whole expired buckets in
bounded batches, the per-report collections of earlier versions go once the window has passed, and every
query is answered from an index (by the server's explain)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from motor.motor_asyncio import AsyncIOMotorClient, AsyncIOMotorDatabase

from fleet_status.adapters.history import HOUR_MS, HistoryStore, bucket_id, hour_of
from fleet_status.domain.shadow import AcceptedReading, PresenceReport
from tests.integration.status.explain import answered_from_index, plan
from tests.support import Stack

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 21, 12, 30, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
RETENTION = timedelta(days=7)


@pytest.fixture
async def db(stack: Stack, unique: str) -> AsyncIterator[AsyncIOMotorDatabase[Any]]:
    client: AsyncIOMotorClient[dict[str, Any]] = AsyncIOMotorClient(stack.mongodb_uri, tz_aware=True)
    database = client[f"status_history_{unique}"]
    yield database
    await client.drop_database(database.name)
    client.close()


async def new_store(db: AsyncIOMotorDatabase[Any]) -> HistoryStore:
    store = HistoryStore(db, retention=RETENTION)
    await store.ensure_indexes(NOW)
    return store


def temp(t: int, value: int = 200) -> AcceptedReading:
    return AcceptedReading("temp", 2, value / 10, value, t)


async def test_reports_share_one_bucket_per_device_and_hour_and_a_replay_adds_nothing(
    db: AsyncIOMotorDatabase[Any],
) -> None:
    store = await new_store(db)
    hour = hour_of(NOW_MS)
    first = [temp(hour + i * 1000, 200 + i) for i in range(5)]
    await store.add({"d1": first, "d2": first[:2]}, {"d1": [PresenceReport(True, hour + 10)]}, NOW)
    # a replay of part of it, with something new and a report from the hour before
    again = [*first[3:], temp(hour + 9000, 300), temp(hour - 1000, 100)]
    await store.add(
        {"d1": again}, {"d1": [PresenceReport(True, hour + 10), PresenceReport(False, hour + 20)]}, NOW
    )
    await store.add({"d1": again}, {}, NOW)  # the whole batch again

    assert await store.buckets.count_documents({}) == 3  # d1 this hour, d1 the hour before, d2
    bucket = await store.buckets.find_one({"_id": bucket_id("d1", hour)})
    assert bucket is not None
    assert sorted(r["t"] - hour for r in bucket["dps"]) == [0, 1000, 2000, 3000, 4000, 9000]
    assert [(p["online"], p["t"] - hour) for p in bucket["presence"]] == [(True, 10), (False, 20)]

    page = await store.dp_history_page(
        "d1", "temp", since_ms=0, until_ms=NOW_MS, before=None, limit=100, now=NOW
    )
    assert [r["t"] - hour for r in page] == [9000, 4000, 3000, 2000, 1000, 0, -1000]


async def test_pages_walk_back_across_hours_and_stop_at_the_retention_window(
    db: AsyncIOMotorDatabase[Any],
) -> None:
    store = await new_store(db)
    # one report every 20 minutes for 8 days: the oldest day is outside retention
    times = [NOW_MS - i * 20 * 60_000 for i in range(8 * 24 * 3)]
    await store.add({"d1": [temp(t, i) for i, t in enumerate(times)]}, {}, NOW - timedelta(days=1))
    kept = [t for t in times if t >= NOW_MS - int(RETENTION.total_seconds() * 1000)]

    seen: list[int] = []
    before: tuple[int, str] | None = None
    while True:
        page = await store.dp_history_page(
            "d1", None, since_ms=0, until_ms=NOW_MS, before=before, limit=50, now=NOW
        )
        seen += [r["t"] for r in page]
        if len(page) < 50:
            break
        before = (page[-1]["t"], page[-1]["_id"])
    assert seen == kept


async def test_retention_deletes_whole_expired_buckets_in_bounded_batches(
    db: AsyncIOMotorDatabase[Any],
) -> None:
    store = await new_store(db)
    if store.server_expires:
        pytest.skip("the server expires buckets with its TTL index; the sweep is for servers without TTL")
    old = NOW - RETENTION - timedelta(hours=3)
    devices = [f"d{i}" for i in range(30)]
    # written while they were recent: 30 devices x 2 expired hours, and 30 buckets still inside the window
    await store.add(
        {
            d: [temp(int(old.timestamp() * 1000)), temp(int(old.timestamp() * 1000) + HOUR_MS)]
            for d in devices
        },
        {},
        old,
    )
    await store.add({d: [temp(NOW_MS - 60_000)] for d in devices}, {}, NOW)
    assert await store.buckets.count_documents({}) == 90

    assert await store.sweep(NOW, batch=25, max_batches=2) == 50  # bounded: the next sweep goes on
    assert await store.sweep(NOW, batch=25, max_batches=10) == 10
    assert await store.sweep(NOW) == 0
    assert await store.buckets.count_documents({}) == 30
    page = await store.dp_history_page(
        "d7", None, since_ms=0, until_ms=NOW_MS, before=None, limit=10, now=NOW
    )
    assert [r["t"] for r in page] == [NOW_MS - 60_000]


async def test_the_per_report_collections_of_earlier_versions_are_dropped_once_the_window_has_passed(
    db: AsyncIOMotorDatabase[Any],
) -> None:
    await db["dp_history"].insert_one({"_id": "d1|temp|1", "device_id": "d1", "t": 1})
    store = await new_store(db)
    await store.ensure_indexes(NOW + timedelta(days=3))  # a restart later does not move the date
    await store.sweep(NOW + RETENTION)
    assert "dp_history" in await db.list_collection_names()
    await store.sweep(NOW + RETENTION + timedelta(days=2))
    assert "dp_history" not in await db.list_collection_names()
    assert await store.meta.find_one({"_id": "legacy"}) is None


async def test_history_reads_and_the_retention_sweep_are_answered_from_an_index(
    db: AsyncIOMotorDatabase[Any],
) -> None:
    store = await new_store(db)
    await store.add({f"d{i}": [temp(NOW_MS - 1000)] for i in range(50)}, {}, NOW)
    hour = hour_of(NOW_MS)
    page_query = {"_id": {"$in": [bucket_id("d7", hour - i * HOUR_MS) for i in range(4)]}}
    assert answered_from_index(await plan(db, "history_buckets", page_query))
    sweep_query = {"_id": {"$lt": bucket_id("", hour - 168 * HOUR_MS)}}
    assert answered_from_index(await plan(db, "history_buckets", sweep_query, limit=500))
