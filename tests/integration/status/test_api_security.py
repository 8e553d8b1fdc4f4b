"""status's HTTP API as `create_app(bootstrap(...))` serves it, on the real Pulsar and MongoDB-wire server:
the key seeded from FLEET_STATUS_API_KEYS and a key status stored before the security kit both work, a key
issued through `fleet-status api-key` with a product scope sees only its products' devices (the scope filter
runs in the database), and without a credential nothing is answered."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from motor.motor_asyncio import AsyncIOMotorClient
from prometheus_client import CollectorRegistry

from fleet_contracts import topics
from fleet_shared.security.cli import add_api_key_commands, run_api_key_command
from fleet_status.bootstrap import bootstrap
from fleet_status.entrypoints.app import create_app
from fleet_status.settings import StatusSettings
from tests.support import Stack, drop_subscription

pytestmark = pytest.mark.integration

SEEDED = "seeded-key-0123456789abcdef0123456789"
LEGACY = "legacy-key-0123456789abcdef0123456789"
PRODUCTS = {"d1": "p1", "d2": "p2", "d3": "p3"}


def shadow(device_id: str) -> dict[str, Any]:
    return {
        "_id": device_id,
        "product_id": PRODUCTS[device_id],
        "version": 1,
        "dps": [],
        "presence": {"online": True, "changed_at_ms": 1, "last_seen_ms": 1},
        "binding": {"state": "bound", "owner_uid": "u1", "home_id": "h1", "at_ms": 1},
    }


async def issue(settings: StatusSettings, service: Any, *argv: str) -> str:
    """`fleet-status api-key add ...` against the service's own kit; the printed key."""
    parser = argparse.ArgumentParser()
    add_api_key_commands(parser.add_subparsers(dest="command"))
    out, err = io.StringIO(), io.StringIO()
    code = await run_api_key_command(
        service.clients.security.api_keys,
        parser.parse_args(argv),
        default_role=settings.api_key_default_role,
        out=out,
        err=err,
    )
    assert code == 0, err.getvalue()
    return out.getvalue().strip()


@pytest.fixture
async def api(stack: Stack, unique: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Any]:
    database = f"status_sec_{unique}"
    mongo: AsyncIOMotorClient[dict[str, Any]] = AsyncIOMotorClient(stack.mongodb_uri, tz_aware=True)
    db = mongo[database]
    # a key the way status stored it before the kit: _id = sha256, a name, created_at
    await db["api_keys"].insert_one(
        {"_id": hashlib.sha256(LEGACY.encode()).hexdigest(), "name": "old", "created_at": datetime.now(UTC)}
    )
    await db["shadows"].insert_many([shadow(d) for d in PRODUCTS])
    for name, value in {**stack.env(), "FLEET_TUYA_ACCESS_SECRET": ""}.items():
        monkeypatch.setenv(name, value)
    settings = StatusSettings(
        database=database,
        subscription=f"status-sec-{unique}",
        initial_position="latest",
        api_keys=f"devstack:{SEEDED}",
        status_reconcile_interval_s=0,
    )
    registry = CollectorRegistry()
    service = bootstrap(settings, registry=registry)
    app = create_app(service, registry=registry)
    try:
        async with app.router.lifespan_context(app):
            yield settings, service, app
    finally:
        await mongo.drop_database(database)
        mongo.close()
        # the service's durable subscription on the shared device topic would keep a backlog forever
        await asyncio.to_thread(
            drop_subscription, stack.pulsar_admin_url, topics.DEVICE_EVENTS.name, settings.subscription
        )


def client(app: Any, key: str | None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://status", headers=headers
    )


async def test_seeded_legacy_and_scoped_keys_on_the_real_database(api: Any) -> None:
    settings, service, app = api
    for key in (SEEDED, LEGACY):
        async with client(app, key) as c:
            listed = (await c.get("/v1/devices")).json()
            assert [i["device_id"] for i in listed["items"]] == ["d1", "d2", "d3"], key[:6]
    scoped = await issue(settings, service, "api-key", "add", "ci", "--product", "p1", "--product", "p3")
    async with client(app, scoped) as c:
        listed = (await c.get("/v1/devices")).json()
        one = (await c.get("/v1/devices", params={"product_id": "p3"})).json()
        hidden = await c.get("/v1/devices/d2/shadow")
        other = await c.get("/v1/devices", params={"product_id": "p2"})
    assert [i["device_id"] for i in listed["items"]] == ["d1", "d3"]
    assert [i["device_id"] for i in one["items"]] == ["d3"]
    assert (hidden.status_code, other.status_code) == (404, 403)
    async with client(app, None) as c:
        assert (await c.get("/v1/devices")).status_code == 401
        assert (await c.get("/readyz")).status_code == 200  # operational endpoints stay open
