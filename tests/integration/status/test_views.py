"""status's read side on the real MongoDB-wire server: what the writer's stores put in the database comes back
through the views (the HTTP API's read models) typed, paged and ordered, and a bad cursor reads nothing."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from motor.motor_asyncio import AsyncIOMotorClient

from fleet_status.adapters.history import HistoryStore
from fleet_status.adapters.shadows import ShadowStore
from fleet_status.domain.dp_schema import DpType
from fleet_status.domain.events import OutboxEntry
from fleet_status.domain.shadow import (
    AcceptedReading,
    Binding,
    BindingState,
    DpState,
    FirmwareChannel,
    Named,
    Presence,
    PresenceReport,
    Shadow,
)
from fleet_status.ports import ShadowWrite
from fleet_status.views import InvalidCursor, StatusViews
from tests.support import Stack

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)
T0 = int((NOW - timedelta(hours=1)).timestamp() * 1000)
# well formed, but of the wrong kind for a timeline (a device id, not a (time, row) position)
DEVICE_LIST_CURSOR = base64.urlsafe_b64encode(b'"d1"').decode()


@pytest.fixture
async def stores(stack: Stack, unique: str) -> AsyncIterator[tuple[ShadowStore, HistoryStore]]:
    client: AsyncIOMotorClient[dict[str, Any]] = AsyncIOMotorClient(stack.mongodb_uri, tz_aware=True)
    db = client[f"status_views_{unique}"]
    shadows, history = ShadowStore(db), HistoryStore(db, retention=timedelta(days=7))
    await shadows.ensure_indexes()
    await history.ensure_indexes()
    yield shadows, history
    await client.drop_database(db.name)
    client.close()


def shadow(device_id: str, *, home: str, online: bool) -> Shadow:
    return Shadow(
        device_id,
        product_id="p1",
        version=1,
        dps={
            "temp": DpState("temp", 21.5, 215, T0 + 5, dp_id=2, type=DpType.INTEGER),
            "fault": DpState(
                "fault", ["motor"], 2, T0 + 6, dp_id=4, type=DpType.BITMAP, flags={"motor": True}
            ),
        },
        presence=Presence(online, T0 + 1, T0 + 6),
        binding=Binding(BindingState.BOUND, "owner-1", home, at_ms=T0),
        name=Named("Hall sensor", T0),
        dp_names={2: Named("Temperature", T0)},
        firmware={9: FirmwareChannel(9, 3, T0, progress_percent=100, version="1.2.0", version_at_ms=T0)},
    )


async def test_shadows_come_back_as_views_filtered_and_paged_in_device_order(
    stores: tuple[ShadowStore, HistoryStore],
) -> None:
    shadows, history = stores
    outbox = [OutboxEntry("status:d1:shadow:1", "persistent://fleet/status/shadow", "d1", b"{}")]
    writes = [
        ShadowWrite(shadow(d, home=home, online=online), 0, outbox, "w1")
        for d, home, online in [
            ("d1", "h1", True),
            ("d2", "h2", False),
            ("d3", "h1", True),
            ("d4", "h1", True),
        ]
    ]
    assert await shadows.write(writes, NOW) == set()
    views = StatusViews(shadows, history)

    view = await views.shadow("d1")
    assert view is not None
    assert (view.device_id, view.product_id, view.version, view.name) == ("d1", "p1", 1, "Hall sensor")
    assert (view.presence.online, view.presence.changed_at_ms, view.presence.last_seen_ms) == (
        True,
        T0 + 1,
        T0 + 6,
    )
    assert view.binding.model_dump() == {"state": "bound", "owner_uid": "owner-1", "home_id": "h1"}
    temp = view.dps["temp"]
    assert (temp.value, temp.raw, temp.dp_id, temp.type, temp.device_time_ms) == (
        21.5,
        215,
        2,
        "Integer",
        T0 + 5,
    )
    assert view.dps["fault"].flags == {"motor": True}
    assert view.dp_names == {"2": "Temperature"}
    assert (view.firmware["9"].version, view.firmware["9"].progress_percent) == ("1.2.0", 100)
    assert await views.shadow("nope") is None

    first = await views.devices(product_id="p1", home_id="h1", online=True, cursor=None, limit=2)
    assert [v.device_id for v in first.items] == ["d1", "d3"]
    assert first.next_cursor is not None
    rest = await views.devices(product_id="p1", home_id="h1", online=True, cursor=first.next_cursor, limit=2)
    assert [v.device_id for v in rest.items] == ["d4"]
    assert rest.next_cursor is None
    offline = await views.devices(product_id=None, home_id=None, online=False, cursor=None, limit=10)
    assert [v.device_id for v in offline.items] == ["d2"]
    with pytest.raises(InvalidCursor):
        await views.devices(product_id=None, home_id=None, online=None, cursor="bm90LWpzb24", limit=2)


async def test_history_and_presence_pages_newest_first_across_cursors(
    stores: tuple[ShadowStore, HistoryStore],
) -> None:
    shadows, history = stores
    readings = [AcceptedReading("temp", 2, (200 + i) / 10, 200 + i, T0 + i) for i in range(5)]
    readings.append(AcceptedReading("mode", 3, "cool", "cool", T0 + 2))
    presence = [PresenceReport(i % 2 == 0, T0 + i) for i in range(3)]
    await history.add({"d1": readings}, {"d1": presence}, NOW)
    await history.add({"d1": readings}, {"d1": presence}, NOW)  # a replay adds nothing
    views = StatusViews(shadows, history)

    seen: list[int] = []
    cursor: str | None = None
    while True:
        page = await views.dp_history("d1", code="temp", since_ms=0, until_ms=None, cursor=cursor, limit=2)
        seen += [row.device_time_ms for row in page.items]
        assert all(row.code == "temp" and row.dp_id == 2 for row in page.items)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == [T0 + 4, T0 + 3, T0 + 2, T0 + 1, T0]

    everything = await views.dp_history(
        "d1", code=None, since_ms=T0 + 2, until_ms=T0 + 3, cursor=None, limit=10
    )
    assert sorted((r.code, r.device_time_ms) for r in everything.items) == [
        ("mode", T0 + 2),
        ("temp", T0 + 2),
        ("temp", T0 + 3),
    ]

    timeline = await views.presence("d1", since_ms=0, until_ms=None, cursor=None, limit=2)
    assert [(r.online, r.device_time_ms) for r in timeline.items] == [(True, T0 + 2), (False, T0 + 1)]
    assert timeline.next_cursor is not None
    last = await views.presence("d1", since_ms=0, until_ms=None, cursor=timeline.next_cursor, limit=2)
    assert [(r.online, r.device_time_ms) for r in last.items] == [(True, T0)]
    with pytest.raises(InvalidCursor):
        await views.presence("d1", since_ms=0, until_ms=None, cursor=DEVICE_LIST_CURSOR, limit=2)
