"""The outbox after a crash, with the real service process on the real Pulsar and MongoDB-wire server.

A process that dies right after its session writes, before their relays ran, leaves the events in the
sessions' outboxes (flagged `outbox_at`). The next process relays them at start, from the `outbox_at`
index: every event reaches `persistent://fleet/pairing/events` once, the outboxes are emptied and the
flags gone, and neither its later sweeps nor another SIGKILL and restart publish any of them again.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pulsar
import pytest
from motor.motor_asyncio import AsyncIOMotorClient
from pulsar import asyncio as pa

from fleet_contracts import topics
from fleet_contracts.pairing import PairingMode
from fleet_pairing.adapters.events import EventEncoder
from fleet_pairing.adapters.mongo import OUTBOX_AT, SessionStore
from fleet_pairing.domain.session import (
    Activation,
    FactSource,
    SessionRequest,
    open_session,
    record_activation,
)
from tests.e2e.ingest.support import TopicReader
from tests.e2e.pairing.support import Pairing
from tests.support import Stack, drop_subscription, until

pytestmark = pytest.mark.e2e

SESSIONS = 40
NO_TUYA = "http://127.0.0.1:9"  # every session left is over: the process asks Tuya nothing


async def leave_outboxes(store: SessionStore, n: int) -> set[str]:
    """The writes of a process that died before relaying them: sessions opened and paired (4 events each:
    token issued; device paired, token consumed, session ended). Returns the event ids."""
    now = datetime.now(UTC)
    for i in range(n):
        request = SessionRequest(owner_uid=f"u{i}", home_id="h1", mode=PairingMode.EZ, time_zone_id="UTC")
        opened = open_session(
            f"ps_crash{i:03}",
            request,
            region="EU",
            token=f"tokcrash{i}",
            lifetime=timedelta(minutes=10),
            now=now,
        )
        first = replace(opened.session, version=1)
        await store.add(replace(opened, session=first))
        paired = record_activation(first, Activation(f"dev{i}", now, FactSource.PUSH, product_id="p1"))
        assert await store.save(replace(paired, session=replace(paired.session, version=2)), 1)
    return {e.id for left in await store.unrelayed(10 * n) for e in left.entries}


async def test_events_a_crash_left_in_outboxes_are_relayed_once_by_the_next_process(
    stack: Stack, unique: str, tmp_path: Path
) -> None:
    access_id = f"pairx{unique}"
    mongo: AsyncIOMotorClient[dict[str, Any]] = AsyncIOMotorClient(stack.mongodb_uri, tz_aware=True)
    pairing = Pairing(
        stack,
        NO_TUYA,
        access_id,
        secrets.token_hex(16),
        unique,
        tmp_path / "pairing.log",
        {"FLEET_PAIRING_OUTBOX_SWEEP_INTERVAL_S": "0.3", "FLEET_PAIRING_OUTBOX_GRACE_S": "0"},
    )
    db = mongo[pairing.database]
    client = pa.Client(stack.pulsar_url, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Warn))
    events = await TopicReader.open(client, topics.PAIRING_EVENTS.name, f"e2e-pairx-{unique}", access_id)
    try:
        store = SessionStore(db, EventEncoder(access_id, "eu"))  # no relay: the process died first
        await store.ensure_indexes()
        written = await leave_outboxes(store, SESSIONS)
        assert len(written) == 4 * SESSIONS
        assert await db["sessions"].count_documents({OUTBOX_AT: {"$exists": True}}) == SESSIONS

        pairing.start()  # the next process
        await pairing.wait_ready()
        await until(
            lambda: len(events.messages) >= len(written), 60, lambda: f"{len(events.messages)} events"
        )
        assert await store.unrelayed(10 * SESSIONS) == []
        assert await db["sessions"].count_documents({OUTBOX_AT: {"$exists": True}}) == 0

        await asyncio.sleep(1.5)  # its sweeps (every 0.3 s, no grace) find nothing more
        pairing.kill()
        pairing.start()  # and neither does a process after another SIGKILL
        await pairing.wait_ready()
        await asyncio.sleep(1.5)
        ids = [body["id"] for body, _ in events.messages]
        assert sorted(ids) == sorted(written), "every event left behind, each once"
        in_order = [
            "pairing.token.issued.v1",
            "pairing.device.paired.v1",
            "pairing.token.consumed.v1",
            "pairing.session.ended.v1",
        ]
        per_session: dict[str, list[str]] = {}
        for body, _ in events.messages:
            per_session.setdefault(body["data"]["session_id"], []).append(body["type"])
        assert per_session == {f"ps_crash{i:03}": in_order for i in range(SESSIONS)}
    finally:
        pairing.kill()
        await events.close()
        await client.close()
        await asyncio.to_thread(
            drop_subscription, stack.pulsar_admin_url, topics.DEVICE_EVENTS.name, f"pairing-e2e-{unique}"
        )
        await mongo.drop_database(pairing.database)
        mongo.close()
