"""status's shadow store on the real MongoDB-wire server: version-conditional writes and outbox clearing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from motor.motor_asyncio import AsyncIOMotorClient

from fleet_contracts.tuya import DpType
from fleet_status.adapters.shadows import ShadowStore, unpacked
from fleet_status.domain.events import OutboxEntry
from fleet_status.domain.shadow import DpState, FirmwareChannel, Named, Presence, Shadow
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


def full_shadow(version: int) -> Shadow:
    return Shadow(
        "d2",
        "p1",
        version,
        dps={
            "temp": DpState("temp", 21.5, 215, 10, 2, DpType.INTEGER, None),
            "mode": DpState("mode", {"a": [1, "x"]}, {"a": [1, "x"]}, 11, 3, None, {"f": True}, "cloud"),
        },
        presence=Presence(True, 10, 11),
        dp_names={2: Named("Temperature", 5)},
        firmware={0: FirmwareChannel(0, 2, 7, 50, "upgrading", "1.2.3", 6)},
    )


async def test_dps_names_and_firmware_are_stored_packed_and_read_back_whole_also_from_the_old_layout(
    store: ShadowStore,
) -> None:
    shadow = full_shadow(1)
    assert await store.write([ShadowWrite(shadow, 0, [], "w1")], NOW) == set()
    raw = await store.shadows.find_one({"_id": "d2"})
    assert raw is not None
    assert all(isinstance(raw[s], str) for s in ("dps", "dp_names", "firmware"))  # one value each
    [stored] = (await store.load(["d2"])).values()
    assert stored.shadow.state_equals(shadow)
    # the views get lists, as before
    doc = await store.get("d2")
    assert doc is not None
    assert {d["code"] for d in doc["dps"]} == {"temp", "mode"}
    assert doc["dp_names"] == [{"dp_id": 2, "name": "Temperature", "at_ms": 5}]
    [listed] = await store.list(product_id="p1", home_id=None, online=None, after=None, limit=10)
    assert listed["dps"] == doc["dps"]
    assert listed["firmware"] == doc["firmware"]

    # a document written before packing (arrays of sub-documents) reads the same
    old = {**raw, **{s: unpacked(raw, s) for s in ("dps", "dp_names", "firmware")}}
    await store.shadows.replace_one({"_id": "d2"}, old)
    [stored] = (await store.load(["d2"])).values()
    assert stored.shadow.state_equals(shadow)
    assert await store.get("d2") == doc
