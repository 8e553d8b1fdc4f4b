"""The history journal on the real MongoDB-wire server: it is stored with the shadow and read back whole,
history pages merge journal and bucket rows in the same order and paging as buckets alone, a crash between a
move's bucket append and its clearing write shows every row once and a redone move adds nothing, and the HTTP
read models never show the journal."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from motor.motor_asyncio import AsyncIOMotorClient

from fleet_status.adapters.history import HistoryStore, bucket_id, hour_of
from fleet_status.adapters.shadows import ShadowStore
from fleet_status.domain.journal import HOUR_MS, Journal
from fleet_status.domain.shadow import AcceptedReading, PresenceReport, Shadow
from fleet_status.ports import ShadowWrite
from fleet_status.views import StatusViews
from tests.support import Stack

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)
NOW_MS = int(NOW.timestamp() * 1000)
HOUR = hour_of(NOW_MS) - HOUR_MS  # the previous hour: every row is in the past


@pytest.fixture
async def stores(stack: Stack, unique: str) -> AsyncIterator[tuple[ShadowStore, HistoryStore]]:
    client: AsyncIOMotorClient[dict[str, Any]] = AsyncIOMotorClient(stack.mongodb_uri, tz_aware=True)
    db = client[f"status_journal_{unique}"]
    shadows, history = ShadowStore(db), HistoryStore(db, retention=timedelta(days=7))
    await shadows.ensure_indexes()
    await history.ensure_indexes(NOW)
    yield shadows, history
    await client.drop_database(db.name)
    client.close()


def temp(t: int) -> AcceptedReading:
    return AcceptedReading("temp", 2, (t % 1000) / 10, t % 1000, t)


async def write(shadows: ShadowStore, version: int, journal: Journal) -> None:
    w = ShadowWrite(Shadow("d1", product_id="p1", version=version), version - 1, [], f"w{version}", journal)
    assert await shadows.write([w], NOW) == set()


async def all_pages(history: HistoryStore, code: str | None, limit: int) -> list[int]:
    seen: list[int] = []
    before: tuple[int, str] | None = None
    while True:
        page = await history.dp_history_page(
            "d1", code, since_ms=0, until_ms=NOW_MS, before=before, limit=limit, now=NOW
        )
        seen += [r["t"] - HOUR for r in page]
        if len(page) < limit:
            return seen
        before = (page[-1]["t"], page[-1]["_id"])


async def test_a_journal_is_stored_with_its_shadow_and_read_back_whole(
    stores: tuple[ShadowStore, HistoryStore],
) -> None:
    shadows, _ = stores
    journal = Journal().with_rows(
        [temp(HOUR + 1), AcceptedReading("mode", None, {"a": [1]}, "x", HOUR + 2)],
        [PresenceReport(True, HOUR), PresenceReport(False, HOUR + 3)],
        NOW_MS,
    )
    await write(shadows, 1, journal)
    [stored] = (await shadows.load(["d1"])).values()
    assert stored.journal == journal
    views = StatusViews(shadows, stores[1])
    shown = await shadows.get("d1")
    assert shown is not None
    assert "journal" not in shown
    [listed] = await shadows.list(product_id="p1", home_id=None, online=None, after=None, limit=5)
    assert "journal" not in listed
    assert (await views.shadow("d1")) is not None


async def test_pages_merge_journal_and_buckets_in_order_and_a_crash_between_move_steps_shows_rows_once(
    stores: tuple[ShadowStore, HistoryStore],
) -> None:
    shadows, history = stores
    # moved earlier: rows 0..9 of the hour before, and 10..14
    await history.add({"d1": [temp(HOUR - HOUR_MS + i) for i in range(10)]}, {}, NOW)
    await history.add({"d1": [temp(HOUR + i) for i in range(10, 15)]}, {}, NOW)
    # journaled since: rows 15..19, with an older late report (5 of the hour before) among them
    journal = Journal().with_rows(
        [*(temp(HOUR + i) for i in range(15, 20)), temp(HOUR - HOUR_MS + 5)], [], NOW_MS
    )
    await write(shadows, 1, journal)
    expected = [*range(19, 9, -1), *(i - HOUR_MS for i in range(9, -1, -1))]
    for limit in (1, 3, 7, 100):
        assert await all_pages(history, None, limit) == expected, limit
    assert await all_pages(history, "mode", 3) == []

    # a move's first step (the bucket append) lands, the process dies before the clearing write
    await history.add({"d1": journal.readings}, {}, NOW)
    assert await all_pages(history, None, 4) == expected  # rows in both are shown once
    await history.add({"d1": journal.readings}, {}, NOW)  # the move, redone by the next process
    await write(shadows, 2, Journal())
    assert await all_pages(history, "temp", 4) == expected
    bucket = await history.buckets.find_one({"_id": bucket_id("d1", HOUR)})
    assert bucket is not None
    assert sorted(r["t"] - HOUR for r in bucket["dps"]) == list(range(10, 20))  # each once
    earlier = await history.buckets.find_one({"_id": bucket_id("d1", HOUR - HOUR_MS)})
    assert earlier is not None
    assert len(earlier["dps"]) == 10


async def test_presence_pages_merge_the_journal_too(stores: tuple[ShadowStore, HistoryStore]) -> None:
    shadows, history = stores
    await history.add({}, {"d1": [PresenceReport(True, HOUR + 1)]}, NOW)
    journal = Journal().with_rows(
        [], [PresenceReport(False, HOUR + 2), PresenceReport(True, HOUR + 1)], NOW_MS
    )
    await write(shadows, 1, journal)
    page = await history.presence_page("d1", since_ms=0, until_ms=NOW_MS, before=None, limit=10, now=NOW)
    assert [(r["online"], r["t"] - HOUR) for r in page] == [(False, 2), (True, 1)]
