"""status's shadow store on the real MongoDB-wire server: version-conditional writes and outbox clearing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from motor.motor_asyncio import AsyncIOMotorClient

from fleet_status.adapters.shadows import ShadowStore
from fleet_status.domain.events import OutboxEntry
from fleet_status.domain.shadow import Shadow
from fleet_status.ports import ShadowWrite
from tests.support import Stack

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 21, tzinfo=UTC)


@pytest.fixture
async def store(stack: Stack, unique: str) -> AsyncIterator[ShadowStore]:
    client: AsyncIOMotorClient[dict[str, object]] = AsyncIOMotorClient(stack.mongodb_uri, tz_aware=True)
    db = client[f"status_store_{unique}"]
    yield ShadowStore(db)
    await client.drop_database(db.name)
    client.close()


def entry(event_id: str) -> OutboxEntry:
    return OutboxEntry(
        event_id, "persistent://fleet/status/shadow", "d1", b'{"id": "%s"}' % event_id.encode()
    )


async def test_a_stale_version_loses_and_a_relayed_outbox_is_cleared_without_touching_a_newer_one(
    store: ShadowStore,
) -> None:
    first = [entry("e1"), entry("e2")]
    assert await store.write([ShadowWrite(Shadow("d1", version=1), 0, first, "w1")], NOW) == set()
    newer = [entry("e3")]
    assert await store.write([ShadowWrite(Shadow("d1", version=2), 1, newer, "w2")], NOW) == set()
    # a writer still holding version 1 loses the race
    assert await store.write([ShadowWrite(Shadow("d1", version=2), 1, [entry("x")], "w3")], NOW) == {"d1"}

    await store.clear_outbox({"d1": first})  # relayed late: version 2's event must survive
    [stored] = (await store.load(["d1"])).values()
    assert (stored.shadow.version, stored.outbox) == (2, newer)

    await store.clear_outbox({"d1": newer})
    [stored] = (await store.load(["d1"])).values()
    assert stored.outbox == []
    assert await store.with_outbox(10) == []
