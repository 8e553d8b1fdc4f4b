"""Every query of status's HTTP API is answered from an index (by the server's own explain) at a size CI can
afford: a shadow by id, device lists by any mix of product, home and online state (a page sorted by device id,
read from the index in order, limited there), and DP history and presence pages (by bucket `_id`s, see
test_history_buckets). The pages are also checked against the same query answered in Python."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from motor.motor_asyncio import AsyncIOMotorClient, AsyncIOMotorDatabase

from fleet_status.adapters.history import HistoryStore
from fleet_status.adapters.shadows import ShadowStore, shadow_to_doc
from fleet_status.domain.shadow import Binding, BindingState, Presence, Shadow
from fleet_status.views import StatusViews
from tests.integration.status.explain import answered_from_index, plan
from tests.support import Stack

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 21, tzinfo=UTC)
DEVICES = 5000
PRODUCTS = ["p0", "p1", "p2", "p3"]


def shadow(i: int) -> Shadow:
    return Shadow(
        f"dev{i:05d}",
        product_id=PRODUCTS[i % len(PRODUCTS)],
        version=1,
        presence=Presence(
            online=i % 3 != 0, changed_at_ms=1, last_seen_ms=1, deadline_ms=1000 + i if i % 5 == 0 else None
        ),
        binding=Binding(BindingState.BOUND, "owner", f"h{i % 50}", at_ms=1),
    )


@pytest.fixture(scope="module")
async def db(stack: Stack) -> AsyncIterator[AsyncIOMotorDatabase[Any]]:
    client: AsyncIOMotorClient[dict[str, Any]] = AsyncIOMotorClient(stack.mongodb_uri, tz_aware=True)
    database = client[f"status_indexes_{uuid.uuid4().hex[:10]}"]
    store = ShadowStore(database)
    await store.ensure_indexes()
    docs = [shadow_to_doc(shadow(i), [], "w", NOW) for i in range(DEVICES)]
    for start in range(0, DEVICES, 1000):
        await store.shadows.insert_many(docs[start : start + 1000])
    yield database
    await client.drop_database(database.name)
    client.close()


FILTERS = [
    dict(zip(("product_id", "home_id", "online"), values, strict=True))
    for values in itertools.product([None, "p2"], [None, "h7"], [None, False])
]


@pytest.mark.parametrize("after", [None, "dev02500"])
@pytest.mark.parametrize(
    "filters", FILTERS, ids=lambda f: "+".join(k for k, v in f.items() if v is not None) or "all"
)
async def test_device_lists_read_a_page_from_an_index_in_device_order(
    db: AsyncIOMotorDatabase[Any], filters: dict[str, Any], after: str | None
) -> None:
    docs = await ShadowStore(db).list(**filters, after=after, limit=20)
    # the query the HTTP API runs, as the server sees it
    filter_ = ShadowStore.list_filter(**filters, after=after)
    reply = await plan(db, "shadows", filter_, sort={"_id": 1}, limit=20)
    assert answered_from_index(reply, sorted_and_limited=True), reply

    expected = [
        s.device_id
        for s in map(shadow, range(DEVICES))
        if (filters["product_id"] is None or s.product_id == filters["product_id"])
        and (filters["home_id"] is None or s.binding.home_id == filters["home_id"])
        and (filters["online"] is None or s.presence.online == filters["online"])
        and (after is None or s.device_id > after)
    ][:20]
    assert [d["_id"] for d in docs] == expected


async def test_a_shadow_by_id_is_read_from_the_index(db: AsyncIOMotorDatabase[Any]) -> None:
    assert answered_from_index(await plan(db, "shadows", {"_id": "dev00042"}))
    views = StatusViews(ShadowStore(db), HistoryStore(db, retention=timedelta(days=7)))
    view = await views.shadow("dev00042")
    assert view is not None
    assert view.product_id == "p2"


async def test_devices_past_their_inactivity_deadline_are_found_from_the_index(
    db: AsyncIOMotorDatabase[Any],
) -> None:
    due = await ShadowStore(db).due(now_ms=1100, limit=500)
    assert sorted(due) == [(f"dev{i:05d}", 1000 + i) for i in range(0, 101, 5)]
    assert len(await ShadowStore(db).due(now_ms=10**6, limit=7)) == 7  # a bounded batch
    reply = await plan(db, "shadows", {"presence.deadline_ms": {"$lte": 1100}}, limit=500)
    assert answered_from_index(reply), reply


async def test_stale_shadows_for_reconciliation_are_found_from_the_index(
    db: AsyncIOMotorDatabase[Any],
) -> None:
    assert await ShadowStore(db).stale(NOW, 10) == []
    assert len(await ShadowStore(db).stale(NOW + timedelta(seconds=1), 10)) == 10
    reply = await plan(db, "shadows", {"updated_at": {"$lt": NOW}})
    assert answered_from_index(reply), reply
