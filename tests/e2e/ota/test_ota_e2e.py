"""ota end to end on the real stack: tuya-sim (Tuya's cloud: devices, the OTA API and its rate limit, pushes
on Tuya's topic layout), ingest (a process) and ota (a process, SIGKILLed mid-wave and restarted) on the dev
stack's Apache Pulsar and FerretDB; the simulator's ground truth says what must have happened.

One release of the plug's firmware over three regions (canary, then full): 40% of eu's upgrades fail (30%,
the issue's figure, from 1,000 devices), so eu alone halts (its failures judged over its stages together)
while us and in complete; three us devices report "done" but stay on the old version and are not counted as
succeeded. A second
release of the sleepy sensor's firmware waits (Tuya's 5) until the devices wake, then completes. Tuya's rate
limit on the upgrade API is below what the four rollouts ask for together: ota paces the project's commands
under it (one pace for every region and release), so Tuya refuses next to nothing. Checked: no device was
commanded twice for one attempt (the simulator counts commands), an attempt Tuya never received (the
disruption came between recording it and sending it) is given back and sent once, never failed, the counters
equal a recount of the upgrade documents and plan chunks, a halted region sends nothing more, malformed
bodies get a 422 naming the field and change nothing, and no secret is in any ota document or log line.
The database restart runs on a MongoDB-wire server of the test's own on the shared dev stack.

Size: `OTA_E2E_DEVICES` (default 300, half plugs, half sleepy sensors, a third of each per region: every
region still has a canary of 30 and a full stage after it; 10,000 for the issue's full run). Each phase's time
is printed (`-s` shows it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from motor.motor_asyncio import AsyncIOMotorClient

from fleet_contracts import topics
from tests.e2e.ingest.sim_support import SimProcess
from tests.e2e.ingest.support import IngestProcess
from tests.support import ServiceProcess, Stack, drop_subscription, restartable_database, until

DEVICES = int(os.environ.get("OTA_E2E_DEVICES", "300"))
# Tuya's limit paces every command (below): about half the fleet is commanded, at 10/s, so the waits grow with
# the fleet past the default size (10,000 devices: ~5,000 commands, 8-9 minutes at the limit, longer loaded)
SETTLE_S = max(240.0, DEVICES / 5)
IMPORT_CHUNK = 250
# ota's answers, waited for this long: at 10,000 devices on the loaded shared machine (load average 25-30) a
# release's creation took over 10 s and an import of 250 devices over 60 s, the service busy with the fleet's
# 10,000 device events (its span queue overflowing)
REQUEST_S = 180.0
# a few minutes on a busy shared stack (the loops, FerretDB and three processes share two cores)
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900 + SETTLE_S - 240)]
PLUG, SENSOR = "sim0plug0cz00001", "sim0th00wsdcg003"  # the sensor is a low-power (sleepy) product
REGIONS = ("eu", "us", "in")
PER_MINUTE = 1200.0  # ota's dispatch rate per region: 60/s over three regions
# Tuya's (simulated) limit on the upgrade API, per second, with no burst: below what the rollouts ask (20/s
# each); ota is told the project's limit and paces every rollout's commands under it together
TUYA_UPGRADE_RATE = 10.0
# eu alone must halt. The figure is 30%: at the default size eu has 50 plugs, and 30% of 50 stays
# under the 20% halt threshold in a few runs in a hundred (binomial: 9 or fewer failures ~4%), a flaky test;
# 40% does so in ~0.1%. From 1,000 devices on the 30% is used (`OTA_E2E_EU_FAILURE` overrides either).
EU_FAILURE = float(os.environ.get("OTA_E2E_EU_FAILURE", "0.3" if DEVICES >= 1000 else "0.4"))
API_KEY = secrets.token_urlsafe(24)
SIM_SETTINGS: dict[str, str | int | float] = {
    "ota_step_ms": 200,
    "ota_step_pct": 25,
    "rate_limit_rps": 0,  # the project limit off: only the upgrade API's own limit applies
    "wake_window_s": 0.001,  # sleepy devices are asleep unless woken
    "devices": 1,  # the startup fleet; the test creates its own
}


def ota_process(
    stack: Stack, access_id: str, secret: str, sim: SimProcess, database: str, log: Path
) -> ServiceProcess:
    return ServiceProcess(
        "ota",
        log=log,
        stack=stack,
        api_key=API_KEY,
        env={
            "FLEET_TUYA_ACCESS_ID": access_id,
            "FLEET_TUYA_ACCESS_SECRET": secret,
            "FLEET_TUYA_OPENAPI_URL": sim.url,
            "FLEET_OTA_DATABASE": database,
            "FLEET_OTA_SUBSCRIPTION": f"ota-{database}",
            "FLEET_API_KEY_DEFAULT_ROLE": "firmware",
            "FLEET_OTA_TICK_S": "0.2",
            "FLEET_OTA_MAX_ATTEMPTS": "1",
            "FLEET_OTA_ATTEMPT_TIMEOUT_S": "120",
            # a command is sent within a quarter of this or never, its call abandoned a quarter later; the
            # other half covers Tuya's lag (the simulator's, on a loaded machine: a request it reads late)
            "FLEET_OTA_COMMAND_GRACE_S": "20",
            "FLEET_OTA_TUYA_UPGRADE_PER_S": str(TUYA_UPGRADE_RATE),
            "FLEET_OTA_POLL_AFTER_S": "5",
            "FLEET_OTA_DISPATCH_BURST": "20",
        },
    )


@dataclass
class Rig:
    access_id: str
    secret: str
    database: str
    stack: Stack
    sim: SimProcess
    ingest: IngestProcess
    ota: ServiceProcess
    log: Path

    def new_ota(self) -> ServiceProcess:
        return ota_process(self.stack, self.access_id, self.secret, self.sim, self.database, self.log)


@pytest.fixture
async def rig(stack: Stack, unique: str, tmp_path: Path) -> AsyncIterator[Rig]:
    async with open_rig(stack, unique, tmp_path) as r:
        yield r


@contextlib.asynccontextmanager
async def open_rig(stack: Stack, unique: str, tmp_path: Path) -> AsyncIterator[Rig]:
    access_id = f"otae2e{unique}"
    secret = secrets.token_hex(16)
    sim = SimProcess(stack, access_id, secret, tmp_path / "sim.log", **SIM_SETTINGS)
    ingest = IngestProcess(stack, access_id, secret, f"ingest_ota_{unique}", tmp_path / "ingest.log")
    database, log = f"ota_{unique}", tmp_path / "ota.log"
    ota = ota_process(stack, access_id, secret, sim, database, log)
    rig = Rig(access_id, secret, database, stack, sim, ingest, ota, log)
    try:
        sim.start()
        await sim.wait_ready()
        ingest.start()
        await ingest.wait_ready()
        rig.ota.start()
        await rig.ota.wait_ready()
        yield rig
    finally:
        rig.ota.kill()
        ingest.kill()
        sim.stop()
        # the service's durable subscription on the shared device topic would keep its backlog for ever
        await asyncio.to_thread(
            drop_subscription, stack.pulsar_admin_url, topics.DEVICE_EVENTS.name, f"ota-{database}"
        )
        client: AsyncIOMotorClient[Any] = AsyncIOMotorClient(stack.mongodb_uri)
        await client.drop_database(rig.database)
        await client.drop_database(f"ingest_ota_{unique}")
        client.close()


def firmware_body(product: str, version: str) -> dict[str, Any]:
    return {
        "product_id": product,
        "channel": 0,
        "version": version,
        "size_bytes": 524288,
        "md5": "0" * 31 + "1",
        "signature": "hmac-sha256:e2e",
        "url": f"https://firmware.example/{product}/{version}.bin",
        "upgrade_type": 1,
        "packet_timeout_s": 60,
    }


def region_plan(region: str, *, canary: bool) -> dict[str, Any]:
    plan: dict[str, Any] = {
        "region": region,
        "per_minute": PER_MINUTE,
        "jitter": 0.2,
        "halt_at": {"rate": 0.2, "min_sample": 20},
    }
    if canary:
        plan |= {"canary_quantity": 30, "promote_at": {"rate": 0.8, "min_sample": 20}}
    return plan


def post(ota: ServiceProcess, path: str, body: Any) -> tuple[int, Any]:
    return ota.request("POST", path, body, timeout=REQUEST_S)


def get(ota: ServiceProcess, path: str) -> tuple[int, Any]:
    """An answer slower than `REQUEST_S` counts as an error answer (asked again by the waits)."""
    try:
        return ota.request("GET", path, timeout=REQUEST_S)
    except TimeoutError:
        return 504, {"detail": "no answer in time"}


async def release_state(ota: ServiceProcess, release_id: str) -> dict[str, Any]:
    status, body = await asyncio.to_thread(get, ota, f"/v1/releases/{release_id}")
    assert status == 200, body
    return dict(body)


def statuses(release: dict[str, Any]) -> dict[str, str]:
    return {r["region"]: r["status"] for r in release["regions"]}


async def wake(rig: Rig, devices: list[dict[str, Any]], window_s: float) -> None:
    """Set the sleepy devices' wake windows, 16 requests at a time (one by one took minutes at 10,000)."""
    gate = asyncio.Semaphore(16)

    async def one(device_id: str) -> None:
        async with gate:
            await sim_json(rig, "POST", f"/sim/devices/{device_id}/wake", {"window_s": window_s})

    await asyncio.gather(*(one(d["device_id"]) for d in devices))


async def sim_json(rig: Rig, method: str, path: str, body: Any = None) -> Any:
    async with rig.sim.control() as c:
        r = await c.request(method, path, json=body)
        assert r.status_code == 200, r.text
        return r.json()


async def upgrade_docs(rig: Rig, collection: str = "upgrades") -> list[dict[str, Any]]:
    client: AsyncIOMotorClient[Any] = AsyncIOMotorClient(rig.stack.mongodb_uri)
    try:
        return [d async for d in client[rig.database][collection].find({})]
    finally:
        client.close()


async def all_documents(rig: Rig) -> bytes:
    client: AsyncIOMotorClient[Any] = AsyncIOMotorClient(rig.stack.mongodb_uri)
    try:
        db = client[rig.database]
        out = b""
        for name in await db.list_collection_names():
            async for d in db[name].find({}):
                out += orjson.dumps(d, default=str)
        return out
    finally:
        client.close()


async def wait_for(rig: Rig, release_id: str, want: dict[str, set[str]], within: float) -> dict[str, Any]:
    deadline = time.monotonic() + within
    state: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status, body = await asyncio.to_thread(get, rig.ota, f"/v1/releases/{release_id}")
        # an error answer (the database coming back after a restart) is asked again, not a failure
        if status == 200:
            state = dict(body)
            if all(statuses(state)[region] in allowed for region, allowed in want.items()):
                return state
        await asyncio.sleep(0.5)
    raise AssertionError(
        f"{release_id} did not reach {want}: {orjson.dumps(state).decode()}\n"
        f"{_debug(rig)}\n{rig.ota.log_tail()}"
    )


def recount(
    docs: list[dict[str, Any]], plans: list[dict[str, Any]], walks: list[dict[str, Any]], release_id: str
) -> dict[tuple[str, str], Counter[str]]:
    """Each upgrade document in its state's bucket; each planned id without one (ota creates it when the
    device is dispatched) pending, or cancelled if its chunk was stopped before the id was claimed; for a
    walk, what it planned and has not claimed pending while it walks (cancelled once stopped), and the ids
    of a claim not confirmed yet without an upgrade in its stage pending."""
    buckets = {
        "pending": "pending",
        "retrying": "pending",
        "commanded": "upgrading",
        "upgrading": "upgrading",
        "waiting": "waiting",
        "succeeded": "succeeded",
        "failed": "failed",
        "timed_out": "failed",
        "cancelled": "cancelled",
    }
    out: dict[tuple[str, str], Counter[str]] = {}
    created: dict[str, str] = {}
    for d in docs:
        if d["release_id"] == release_id:
            c = out.setdefault((d["region"], d["stage"]), Counter())
            c[buckets[d["state"]]] += 1
            c["targeted"] += 1
            created[d["device_id"]] = d["stage"]
    for w in walks:
        if w["release_id"] == release_id:
            c = out.setdefault((w["region"], w["stage"]), Counter())
            left = 0 if w["ended"] else max(w["planned"] - w["claimed"], 0)
            unconfirmed = sum(1 for cl in w["claims"] for i in cl["devices"] if created.get(i) != w["stage"])
            c["pending"] += left + unconfirmed
            c["cancelled"] += w["cancelled"] or 0
            c["targeted"] += left + unconfirmed + (w["cancelled"] or 0)
    for chunk in plans:
        if chunk["release_id"] == release_id:
            c = out.setdefault((chunk["region"], chunk["stage"]), Counter())
            cut = chunk["cancelled_from"] if chunk["cancelled"] else chunk["size"]
            for i, device_id in enumerate(chunk["devices"]):
                if device_id not in created:
                    c["pending" if i < cut else "cancelled"] += 1
                    c["targeted"] += 1
    return out


def counters(release: dict[str, Any]) -> dict[tuple[str, str], Counter[str]]:
    keys = ("targeted", "pending", "upgrading", "waiting", "succeeded", "failed", "cancelled")
    return {
        (r["region"], s["stage"]): Counter({k: s[k] for k in keys if s[k]})
        for r in release["regions"]
        for s in r["stages"]
    }


async def test_a_release_over_three_regions_halts_only_the_failing_one_and_survives_a_kill(rig: Rig) -> None:
    async def sigkill_ota() -> None:
        rig.ota.kill()
        rig.ota = rig.new_ota()
        rig.ota.start()
        await rig.ota.wait_ready()

    await release_scenario(rig, sigkill_ota)


async def test_a_database_restart_mid_wave_loses_nothing_and_commands_no_device_twice(
    stack: Stack, unique: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a stack of its own (`just test`) the test restarts that stack's database; on the shared dev stack
    ota, ingest and the simulator use a MongoDB-wire server of the test's own (beside the dev stack's
    Pulsar), so no other run sees the restart."""
    async with restartable_database(stack, f"ota{unique}", monkeypatch) as (own, restart):

        async def restart_database() -> None:
            await asyncio.to_thread(restart)

        async with open_rig(own, unique, tmp_path) as rig:
            await release_scenario(rig, restart_database)


async def release_scenario(rig: Rig, disrupt: Callable[[], Awaitable[None]]) -> None:
    """The release of the module docstring, with `disrupt` (a SIGKILL, a database restart) mid-wave."""
    ota = rig.ota
    began = time.monotonic()

    def phase(name: str) -> None:
        print(f"ota e2e: {name} after {time.monotonic() - began:.1f} s")

    # --- the fleet, ota's inventory, the firmware -------------------------------------------------------
    await sim_json(
        rig,
        "POST",
        "/sim/fleet",
        {
            "seed": 13,
            "devices": DEVICES,
            "homes": 60,
            "regions": list(REGIONS),
            "product_ids": [PLUG, SENSOR],
            "online_ratio": 1.0,
        },
    )
    inventory = await sim_json(rig, "GET", "/sim/ota/devices")
    now = datetime.now(UTC).isoformat()
    # in requests of 250: each answered well within the client's 10 s on a loaded machine (1,000 at a load
    # average of 20 was not, with the directory's writes competing with every other test's)
    for i in range(0, len(inventory), IMPORT_CHUNK):
        chunk = [
            {
                "device_id": d["device_id"],
                "product_id": d["product_id"],
                "region": d["region"],
                "activated_at": datetime.fromtimestamp(d["active_time"], UTC).isoformat()
                if d["active_time"]
                else now,
                "versions": d["firmware"],
            }
            for d in inventory[i : i + IMPORT_CHUNK]
        ]
        status, body = await asyncio.to_thread(post, ota, "/v1/devices", {"devices": chunk})
        assert status == 200, body
    phase(f"fleet created, {len(inventory)} devices imported")
    plugs = [d for d in inventory if d["product_id"] == PLUG]
    sensors_in = [d for d in inventory if d["product_id"] == SENSOR and d["region"] == "in"]
    stale_us = [d["device_id"] for d in plugs if d["region"] == "us"][-3:]
    for product, version in ((PLUG, "1.3.0"), (SENSOR, "1.1.0")):
        await sim_json(
            rig, "POST", "/sim/firmware", {"product_id": product, "version": version, "timeout_s": 60}
        )
        status, body = await asyncio.to_thread(post, ota, "/v1/firmware", firmware_body(product, version))
        assert status == 201, body

    # --- malformed bodies: 422 naming the field, nothing changed ------------------------------------------
    bad = firmware_body(PLUG, "1.4.0") | {"md5": "not-a-md5"}
    status, body = await asyncio.to_thread(post, ota, "/v1/firmware", bad)
    assert status == 422, body
    assert any("md5" in e["field"] for e in body["errors"]), body
    status, body = await asyncio.to_thread(
        post,
        ota,
        "/v1/releases",
        {
            "release_id": "bad",
            "firmware_id": f"{PLUG}:0:1.3",
            "regions": [{"region": "eu", "canary_ratio": "2"}],
        },
    )
    assert status == 422, body
    assert any("canary_ratio" in e["field"] for e in body["errors"]), body
    assert (await asyncio.to_thread(ota.get, f"/v1/firmware/{PLUG}:0:1.4"))[0] == 404
    assert (await asyncio.to_thread(ota.get, "/v1/releases/bad"))[0] == 404

    # --- faults: failures in eu, three "done but old" devices in us, Tuya's rate limit -----------------
    # With one attempt per device, a canary of 30 at 30% stays under the 20% halt threshold (5 or fewer
    # failures) in ~5% of runs; the region's failures are judged over its stages together, so the full stage
    # after such a canary still halts it (eu's plugs all settled without ever reaching 20% over at least 20:
    # ~1.5% at 50 plugs, ~0.2% at 100). The thresholds themselves are unit-tested with exact samples.
    await sim_json(
        rig,
        "PUT",
        "/sim/ota/faults",
        {
            "rules": [{"region": "eu", "product_id": PLUG, "failure": EU_FAILURE}],
            "upgrade_rate_per_s": TUYA_UPGRADE_RATE,
            "upgrade_burst": 1,
        },
    )
    for device_id in stale_us:
        await sim_json(rig, "POST", "/sim/ota/plan", {"device_id": device_id, "outcome": "done_old_version"})

    # the sleepy sensors doze off (the fleet woke them for a while when it was created)
    await wake(rig, sensors_in, 0.001)

    phase("fleet, inventory, firmware and faults ready")
    # --- the releases ------------------------------------------------------------------------------------
    plug_release = {
        "release_id": "plug-1.3",
        "firmware_id": f"{PLUG}:0:1.3",
        "regions": [region_plan(r, canary=True) for r in REGIONS],
    }
    status, body = await asyncio.to_thread(post, ota, "/v1/releases", plug_release)
    assert status == 201, body
    sensor_release = {
        "release_id": "sensor-1.1",
        "firmware_id": f"{SENSOR}:0:1.1",
        "regions": [region_plan("in", canary=False)],
    }
    status, body = await asyncio.to_thread(post, ota, "/v1/releases", sensor_release)
    assert status == 201, body

    # --- the disruption mid-wave (a SIGKILL and a new process on the same database, or a database restart) --
    await until(
        lambda: _commanded(rig) >= len(REGIONS) * 15,  # half the canaries
        within=60,
        what=lambda: f"{_commanded(rig)} commands so far\n{_debug(rig)}\n{ota.log_tail()}",
    )
    await disrupt()
    phase("disrupted")
    ota = rig.ota

    # --- eu halts, us and in complete; the sleepy sensors wait --------------------------------------------
    final = await wait_for(
        rig, "plug-1.3", {"eu": {"halted"}, "us": {"completed"}, "in": {"completed"}}, within=SETTLE_S
    )
    phase("plug release settled")
    # a halted region sends nothing more: its upgrade documents (created when dispatched) stop growing
    await asyncio.sleep(2)  # a dispatch round that began before the halt finishes
    eu_dispatched = sum((d["release_id"], d["region"]) == ("plug-1.3", "eu") for d in await upgrade_docs(rig))
    sensor = await release_state(ota, "sensor-1.1")
    waiting = sum(s["waiting"] for r in sensor["regions"] for s in r["stages"])
    assert waiting > 0, sensor
    await wake(rig, sensors_in, 600)
    await wait_for(rig, "sensor-1.1", {"in": {"completed"}}, within=max(180.0, DEVICES / 30))

    phase("sensor release completed")

    # --- the ground truth ---------------------------------------------------------------------------------
    docs = await _settled_docs(rig)
    plans = await upgrade_docs(rig, "plans")
    walks = await upgrade_docs(rig, "sweeps")
    by_device = {(d["release_id"], d["device_id"]): d for d in docs}
    truth = (await sim_json(rig, "GET", "/sim/truth?messages=false"))["fleet"]["devices"]
    commands = await sim_json(rig, "GET", "/sim/ota/commands")
    # never commanded twice for one attempt: Tuya accepted (or refused for a reason other than its rate
    # limit) exactly as many commands per device as ota recorded attempts. An attempt recorded but never
    # sent (the disruption came between recording it and calling Tuya, or between Tuya's rate-limit refusal
    # and giving the attempt back) was given back by recovery and sent once under the same number.
    for d in docs:
        tally = commands.get(d["device_id"], {"accepted": 0, "refused": {}})
        not_rate_limited = sum(n for code, n in tally["refused"].items() if code != "1199")
        assert tally["accepted"] + not_rate_limited == d["attempt"], (d, tally)
    # one pace for the project: the rollouts together ask for more than Tuya's limit, yet few commands are
    # refused (paced per region, ~2 refusals per accepted command; on a loaded machine a stalled process
    # still sends late now and then: 24 of 189 at a load average of 17)
    accepted = sum(t["accepted"] for t in commands.values())
    refused = sum(t["refused"].get("1199", 0) for t in commands.values())
    print(f"ota e2e: {accepted} commands accepted, {refused} refused for Tuya's rate limit")
    assert refused <= 0.25 * accepted, (accepted, refused)
    # success only on the new version: "done but old" devices failed, nothing succeeded on old firmware
    for device_id in stale_us:
        doc = by_device[("plug-1.3", device_id)]
        assert doc["state"] == "failed", doc
        assert truth[device_id]["firmware"]["0"] != "1.3.0", doc
    for d in docs:
        if d["state"] == "succeeded":
            assert truth[d["device_id"]]["firmware"]["0"] == d["target_version"], d
    # eu halted on its failures; us and in upgraded every plug they hold
    eu = [d for d in docs if d["release_id"] == "plug-1.3" and d["region"] == "eu"]
    assert any(d["state"] == "failed" for d in eu)
    assert len(eu) == eu_dispatched, (len(eu), eu_dispatched)
    for region in ("us", "in"):
        done = [d for d in docs if d["release_id"] == "plug-1.3" and d["region"] == region]
        assert len(done) == sum(1 for p in plugs if p["region"] == region)
        for d in done:
            assert d["state"] == "succeeded" or d["device_id"] in stale_us, d
    # counters equal a recount of the documents
    final = await release_state(ota, "plug-1.3")
    assert counters(final) == recount(docs, plans, walks, "plug-1.3")
    assert counters(await release_state(ota, "sensor-1.1")) == recount(docs, plans, walks, "sensor-1.1")

    # --- no secret anywhere ---------------------------------------------------------------------------------
    stored = await all_documents(rig)
    logs = rig.log.read_bytes()
    for secret in (rig.secret.encode(), API_KEY.encode()):
        assert secret not in stored
        assert secret not in logs


def _commanded(rig: Rig) -> int:
    status, body = get(rig.ota, "/v1/releases/plug-1.3")
    if status != 200:
        return 0
    return sum(s["upgrading"] + s["succeeded"] + s["failed"] for r in body["regions"] for s in r["stages"])


async def _settled_docs(rig: Rig) -> list[dict[str, Any]]:
    """The upgrade documents once every outbox (upgrades, plan chunks and walks) is relayed (counters are
    applied by the relay)."""
    deadline = time.monotonic() + 30
    while True:
        docs = await upgrade_docs(rig)
        plans = await upgrade_docs(rig, "plans") + await upgrade_docs(rig, "sweeps")
        if not any(d.get("relay") for d in docs + plans) or time.monotonic() > deadline:
            return docs
        await asyncio.sleep(0.3)


def _debug(rig: Rig) -> str:
    import pymongo

    client: pymongo.MongoClient[Any] = pymongo.MongoClient(rig.stack.mongodb_uri)
    db = client[rig.database]
    docs = list(db["upgrades"].find({}))
    states = Counter((d["release_id"], d["region"], d["stage"], d["state"]) for d in docs)
    reasons = Counter((d["release_id"], d["state"], d["reason"]) for d in docs)
    relay = db["upgrades"].count_documents({"relay": True})
    rollouts = [(d["_id"], d["status"], d["stage"]) for d in db["rollouts"].find({})]
    client.close()
    release = rig.ota.get("/v1/releases/plug-1.3")
    return (
        f"reasons={dict(reasons)}\nstates={dict(states)}\nrelay pending={relay}\n"
        f"rollouts={rollouts}\n{release}"
    )
