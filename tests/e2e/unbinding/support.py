"""The unbinding e2e rig: the Tuya simulator (strongly bound fleet, removal desk) and the unbinding service
as subprocesses on the real Pulsar and MongoDB-wire server, API keys for several accounts, and helpers that
read the simulator's ground truth and the service's database."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from motor.motor_asyncio import AsyncIOMotorClient

from tests.e2e.ingest.sim_support import SimProcess
from tests.support import ServiceProcess, Stack

#: scale with FLEET_E2E_SCALE (1: the CI size)
SCALE = max(1, int(os.environ.get("FLEET_E2E_SCALE", "1")))
ACCOUNTS = {
    "brand": "operator",
    "acme": "operator",
    "mallory": "operator",
    "admin1": "admin",
    "admin2": "admin",
    "devstack": "admin",  # the local stack's own key: the account `./dev demo` unbinds as
}
WIFI_PASSWORD = "wifi-" + secrets.token_hex(6)


@dataclass
class Rig:
    stack: Stack
    database: str
    access_secret: str
    sim: SimProcess
    svc: ServiceProcess
    keys: dict[str, str]
    tmp: Path

    def client(self, account: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.svc.url,
            headers={"Authorization": f"Bearer {self.keys[account]}"},
            timeout=30,
            limits=httpx.Limits(max_keepalive_connections=0),
        )

    async def call(self, account: str, method: str, path: str, **kw: Any) -> httpx.Response:
        async with self.client(account) as c:
            return await c.request(method, path, **kw)

    async def sim_json(self, method: str, path: str, body: Any = None) -> Any:
        async with self.sim.control() as c:
            r = await c.request(method, path, json=body)
            r.raise_for_status()
            return r.json()

    def restart_service(self) -> None:
        self.svc.proc = None
        self.svc.start()

    def sigkill_service(self) -> None:
        assert self.svc.proc is not None
        self.svc.proc.send_signal(signal.SIGKILL)
        self.svc.proc.wait(10)

    async def close(self) -> None:
        self.svc.kill()
        self.sim.stop()
        client: AsyncIOMotorClient[Any] = AsyncIOMotorClient(self.stack.mongodb_uri)
        try:
            await client.drop_database(self.database)
        finally:
            client.close()

    async def documents(self) -> list[dict[str, Any]]:
        client: AsyncIOMotorClient[Any] = AsyncIOMotorClient(self.stack.mongodb_uri)
        try:
            db = client[self.database]
            return [d for name in await db.list_collection_names() async for d in db[name].find({})]
        finally:
            client.close()

    async def counter(self, scope: str, subject: str) -> int:
        r = await self.call("admin1", "GET", f"/v1/quotas/{scope}/{subject}")
        r.raise_for_status()
        return int(r.json()["used"])


def service_env(
    stack: Stack,
    access_id: str,
    secret: str,
    sim_url: str,
    database: str,
    keys: Mapping[str, str],
    **settings: str | int | float,
) -> dict[str, str]:
    seeded = ",".join(f"{name}:{key}:{ACCOUNTS[name]}" for name, key in keys.items())
    return {
        "FLEET_TUYA_ACCESS_ID": access_id,
        "FLEET_TUYA_ACCESS_SECRET": secret,
        "FLEET_TUYA_OPENAPI_URL": sim_url,
        "FLEET_UNBINDING_DATABASE": database,
        "FLEET_UNBINDING_API_KEYS": seeded,
        "FLEET_LOG_FORMAT": "json",
        "FLEET_LOG_LEVEL": "INFO",
        **{f"FLEET_UNBINDING_{k.upper()}": str(v) for k, v in settings.items()},
    }


async def wait_finished(rig: Rig, batch_ids: list[str], within: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + within
    while True:
        out = []
        for b in batch_ids:
            r = await rig.call("brand", "GET", f"/v1/batches/{b}")
            r.raise_for_status()
            out.append(r.json())
        if all(x["status"] == "finished" for x in out):
            return out
        if time.monotonic() > deadline:
            raise AssertionError(f"batches not finished: {out}")
        await asyncio.sleep(0.3)
