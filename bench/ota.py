"""ota benchmark: planning a release, the progress query, and the dispatch rate against Tuya's rate limit.

1. Directory, then planning: N devices of one product in one region are imported into ota's directory
   (5,000 a call) until its counts per version bucket say all N (`directory_counted_s`: a fresh fleet is
   plannable then), beside the same run's ceiling (the database inserting the same entries with no
   counting, `database_insert_per_s`); then a tenth of them change version, counted by the service's passes
   (`directory_changes_counted_s`). Printed as "directory counted: N devices in S s". Planning: starting a
   full-stage release plans them all (reads the
   buckets' counts, writes one walk document carrying its count in its outbox; dispatchers walk the
   directory lazily). Timed from the start command to the started rollout (`planning_s`: everything is
   durable, the counts included), and separately the relay pass that applies the counts (`counting_s`).
   Goal (issue 13): < 1 s at 100,000.
2. Progress query: `GET /v1/releases/{id}`'s read (the rollouts and the counter documents), averaged over
   200 calls, with N devices planned. Goal: < 50 ms.
3. Dispatch rate: tuya-sim (a process) with Tuya's limit on the upgrade API set to R calls/s (no burst); the
   region's rate is `--ask` times R; one or more dispatching replicas (each its own database connection,
   Tuya client and project pace told R, in this process, on the real stores) pace through the region's
   and the project's shared schedules as the service's loop does (a round reserves the slots of the next
   quarter second, or longer while preparing a round takes longer: `schedule.Lead`). Reported:
   commands Tuya accepted per second against R (goal: >= 95% of R, never above it; refusals give the attempt
   back), and requests per second (accepted + refused) against the region's rate, per replica count.

    uv run python bench/ota.py [--devices 100000] [--limit 20] [--seconds 20] [--replicas 1 2] [--ask 1.0]

Needs the local stack (`./dev up`, `eval "$(uv run devstack env)"`). Writes bench/results/ota.json. The
database here is the stack's (FerretDB locally): its write ceiling is printed beside the planning figure.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
from motor.motor_asyncio import AsyncIOMotorClient

from fleet_contracts.ota import UpgradeType
from fleet_ota.adapters.mongo import (
    DeviceStore,
    FirmwareStore,
    LockStore,
    PacingStore,
    PlanStore,
    ProgressStore,
    RolloutStore,
    UpgradeStore,
    ensure_indexes,
)
from fleet_ota.adapters.relay import OutboxRelay
from fleet_ota.adapters.tuya import TuyaOtaApi
from fleet_ota.domain.firmware import FirmwareSpec
from fleet_ota.domain.release import RegionPlan
from fleet_ota.domain.schedule import DispatchRate
from fleet_ota.domain.targeting import DeviceRecord
from fleet_ota.entrypoints.loops import Loops
from fleet_ota.ports import TuyaOta
from fleet_ota.service_layer import handlers as h
from fleet_ota.views import OtaViews
from fleet_shared.tuya.openapi import TuyaOpenApiClient
from fleet_shared.tuya.ratelimit import RateLimit

RESULTS = Path(__file__).parent / "results" / "ota.json"
MONGODB_URI = os.environ.get("FLEET_MONGODB_URI", "mongodb://127.0.0.1:27017/")
PULSAR_URL = os.environ.get("FLEET_PULSAR_URL", "pulsar://127.0.0.1:6650")
PRODUCT = "sim0plug0cz00001"


class NoBus:
    """The relay's publisher for the planning part (what is timed is the database)."""

    async def publish(self, entries: Any) -> None:
        return None


class NoTuya:
    """Planning and reads never call Tuya."""

    async def confirm_upgrade(self, device_id: str, channel: int) -> None:
        raise AssertionError("not called")

    async def progress(self, device_id: str, channel: int) -> Any:
        raise AssertionError("not called")

    async def current_versions(self, device_id: str) -> dict[int, str]:
        raise AssertionError("not called")

    async def upgrade_ended_at(self, device_id: str, channel: int) -> datetime | None:
        raise AssertionError("not called")


def ports(db: Any, tuya: TuyaOta) -> h.Ports:
    return h.Ports(
        firmware=FirmwareStore(db),
        rollouts=RolloutStore(db),
        upgrades=UpgradeStore(db),
        plans=PlanStore(db),
        progress=ProgressStore(db),
        devices=DeviceStore(db),
        locks=LockStore(db),
        pacing=PacingStore(db),
        tuya=tuya,
        clock=lambda: datetime.now(UTC),
        tenant="bench",
    )


async def release(p: h.Ports, release_id: str, per_minute: float = 60.0) -> None:
    spec = FirmwareSpec(
        PRODUCT, 0, "9.0.0", 1024, "0" * 32, "sig", "https://fw.example/x.bin", UpgradeType.SILENT, 60
    )
    fw = await h.register_firmware(spec, "bench", p)
    plan = RegionPlan("eu", dispatch=DispatchRate(per_minute))
    await h.create_release(release_id, fw.firmware_id, [plan], p)


def fleet_records(first: int, n: int, version: str) -> list[DeviceRecord]:
    activated = datetime.now(UTC) - timedelta(days=30)
    return [
        DeviceRecord(f"dev{i:07d}", PRODUCT, "eu", activated, {0: version}) for i in range(first, first + n)
    ]


async def bench_directory(db: Any, store: DeviceStore, devices: int) -> dict[str, Any]:
    """A fresh directory imported (5,000 devices a call, as `POST /v1/devices` allows) until its counts say
    every device (plannable); then a tenth of the devices change version (counted by the service's passes of
    500). Beside it, the same run's ceiling: the database inserting the same entries with no counting."""
    t = time.perf_counter()
    for i in range(0, devices, 5000):
        await store.record_many(fleet_records(i, min(5000, devices - i), "1.2.0"))
    import_s = time.perf_counter() - t
    while await store.count_once(5000):
        pass
    counted_s = time.perf_counter() - t
    assert (await store.counts(PRODUCT, "eu", 0)).get("1.2.0") == devices
    # the ceiling: the same entries' documents inserted into a scratch collection, 1,000 a command
    docs = [
        {"_id": f"{i:016x}|dev{i:07d}|0", "device_id": f"dev{i:07d}", "channel": 0, "product_id": PRODUCT}
        | {"region": "eu", "activated_at": datetime.now(UTC), "version": "1.2.0", "bucket": "b", "v": 1}
        for i in range(devices)
    ]
    t = time.perf_counter()
    for i in range(0, devices, 1000):
        await db["ceiling"].insert_many(docs[i : i + 1000], ordered=False)
    ceiling = devices / (time.perf_counter() - t)
    await db["ceiling"].drop()
    changed = devices // 10
    t = time.perf_counter()
    for i in range(0, changed, 5000):
        await store.record_many(fleet_records(i, min(5000, changed - i), "1.2.1"))
    while await store.count_once(500):
        pass
    changes_s = time.perf_counter() - t
    assert (await store.counts(PRODUCT, "eu", 0)).get("1.2.1") == changed
    await store.record_many(fleet_records(0, changed, "1.2.0"))  # back: planning below sees one version
    while await store.count_once(5000):
        pass
    print(
        f"directory counted: {devices} devices in {counted_s:.1f} s ({devices / counted_s:,.0f}/s; import "
        f"{import_s:.1f} s) | database insert ceiling, same run: {ceiling:,.0f} entries/s "
        f"({devices / ceiling:.1f} s) | {changed} devices changing version counted in {changes_s:.1f} s",
        flush=True,
    )
    return {
        "directory_counted_s": round(counted_s, 3),  # imported until the counts say every device
        "directory_import_s": round(import_s, 3),
        "directory_counted_per_s": round(devices / counted_s),
        "database_insert_per_s": round(ceiling),  # the same run's ceiling (no counting)
        "directory_changes": changed,
        "directory_changes_counted_s": round(changes_s, 3),
    }


async def bench_planning(devices: int) -> dict[str, Any]:
    client: AsyncIOMotorClient[Any] = AsyncIOMotorClient(MONGODB_URI)
    db = client[f"bench_ota_{uuid.uuid4().hex[:8]}"]
    try:
        await ensure_indexes(db)
        p = ports(db, NoTuya())
        store = DeviceStore(db)
        directory = await bench_directory(db, store, devices)
        await release(p, "bench")
        t = time.perf_counter()
        started = await h.start_rollout("bench", "eu", "bench", p)
        planning_s = time.perf_counter() - t
        relay = OutboxRelay([db["plans"], db["sweeps"], db["rollouts"]], ProgressStore(db), NoBus())
        t = time.perf_counter()
        while await relay.relay_once():
            pass
        counting_s = time.perf_counter() - t
        counts = await p.progress.counts("bench", "eu", started.stage) if started.stage else None
        assert counts is not None
        assert counts.targeted == devices, counts
        views = OtaViews(p.firmware, p.rollouts, p.progress)
        await views.release("bench")
        samples = []
        for _ in range(200):
            t = time.perf_counter()
            await views.release("bench")
            samples.append(time.perf_counter() - t)
        samples.sort()
        return {
            "devices": devices,
            **directory,
            "planning_s": round(planning_s, 3),
            "counting_s": round(counting_s, 3),
            "planning_goal_s": 1.0,
            "progress_query_ms_p50": round(samples[len(samples) // 2] * 1000, 2),
            "progress_query_ms_p99": round(samples[int(len(samples) * 0.99)] * 1000, 2),
            "progress_query_goal_ms": 50.0,
        }
    finally:
        await client.drop_database(db.name)
        client.close()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_sim() -> tuple[subprocess.Popen[bytes], str, str, str, str]:
    """tuya-sim as a process (as deployed): (process, url, control token, access id, access secret)."""
    access_id, secret, token = f"benchota{uuid.uuid4().hex[:8]}", secrets.token_hex(16), secrets.token_hex(8)
    port = _free_port()
    log = Path(tempfile.mkdtemp()) / "sim.log"
    env = {
        **os.environ,
        "FLEET_TUYA_ACCESS_ID": access_id,
        "FLEET_TUYA_ACCESS_SECRET": secret,
        "FLEET_PULSAR_URL": PULSAR_URL,
        "FLEET_SIM_PROVISION": "true",
        "FLEET_SIM_HOST": "127.0.0.1",
        "FLEET_SIM_PORT": str(port),
        "FLEET_SIM_CONTROL_TOKEN": token,
        "FLEET_SIM_LOG_LEVEL": "WARNING",
        "FLEET_SIM_RATE_LIMIT_RPS": "0",
        "FLEET_SIM_DEVICES": "1",
        "FLEET_SIM_OTA_STEP_MS": "60000",  # upgrades stay in flight: only the commands matter here
    }
    env.pop("FLEET_HTTP_PORT", None)
    with log.open("ab") as out:
        sim = subprocess.Popen(
            [sys.executable, "-m", "fleet_tuya_sim", "serve"], env=env, stdout=out, stderr=out
        )
    return sim, f"http://127.0.0.1:{port}", token, access_id, secret


async def _idle() -> int:
    return 0


async def bench_dispatch(
    limit_per_s: float, seconds: float, devices: int, replicas: int, ask: float, lease_s: float
) -> dict[str, Any]:
    sim, url, token, access_id, secret = start_sim()
    clients: list[AsyncIOMotorClient[Any]] = [AsyncIOMotorClient(MONGODB_URI) for _ in range(replicas)]
    name = f"bench_ota_{uuid.uuid4().hex[:8]}"
    tuya_clients = [
        TuyaOpenApiClient(access_id, secret, base_url=url, default_rate_limit=RateLimit(1000, 1000))
        for _ in range(replicas)
    ]
    try:
        control = httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=120)
        for _ in range(300):
            try:
                if (await control.get("/readyz")).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
        fleet = {
            "devices": devices,
            "homes": 50,
            "regions": ["eu"],
            "product_ids": [PRODUCT],
            "online_ratio": 1,
        }
        (await control.post("/sim/fleet", json=fleet)).raise_for_status()
        (
            await control.post("/sim/firmware", json={"product_id": PRODUCT, "version": "9.0.0"})
        ).raise_for_status()
        faults = {"upgrade_rate_per_s": limit_per_s, "upgrade_burst": 1}
        (await control.put("/sim/ota/faults", json=faults)).raise_for_status()
        inventory = (await control.get("/sim/ota/devices")).json()
        db = clients[0][name]
        await ensure_indexes(db)
        # each replica: its own database connection and Tuya client, the same database
        replica_ports = [ports(c[name], TuyaOtaApi(t)) for c, t in zip(clients, tuya_clients, strict=True)]
        p = replica_ports[0]
        now = datetime.now(UTC) - timedelta(days=1)
        directory = DeviceStore(db)
        await directory.record_many(
            [DeviceRecord(d["device_id"], PRODUCT, "eu", now, {0: d["firmware"]["0"]}) for d in inventory]
        )
        while await directory.count_once():
            pass
        # the region's rate: `ask` times Tuya's limit (1: an operator sets it to the limit)
        await release(p, "bench", per_minute=limit_per_s * 60 * ask)
        await h.start_rollout("bench", "eu", "bench", p)
        r = await p.rollouts.get("bench", "eu")
        assert r is not None
        t0, wall0 = time.monotonic(), time.time()

        async def replica(rp: h.Ports) -> None:
            # the service's dispatch loop (its other loops left out): a round per quarter second, each sent
            # in the background while the next prepares
            loops = Loops(
                rp,
                _idle,
                _idle,
                tick_s=1.0,
                batch=200,
                burst=50,
                command_grace_s=120.0,
                poll_after_s=300.0,
                relay_idle_s=0.5,
                project=h.ProjectPace(limit_per_s, lease_s=lease_s),
            )
            while time.monotonic() - t0 < seconds:
                await loops.dispatch_round()
                await asyncio.sleep(loops.tick_s / 4)

        await asyncio.gather(*(replica(rp) for rp in replica_ports))
        await h.in_flight()  # the last commands fired are answered
        elapsed = time.monotonic() - t0
        commands = (await control.get("/sim/ota/commands")).json()
        truth = (await control.get("/sim/ota/rate")).json()
        accepted = sum(c["accepted"] for c in commands.values())
        refused = sum(c["refused"].get("1199", 0) for c in commands.values())
        attempts = sum([d["attempt"] async for d in db["upgrades"].find({}, {"attempt": 1})])
        await control.aclose()
        rate = accepted / elapsed
        sustained, passed = truth.get("per_s_first_to_last") or 0.0, "first_ms" in truth
        return {
            "replicas": replicas,
            "pace_lease_s": lease_s,
            "tuya_limit_per_s": limit_per_s,
            "region_rate_per_s": limit_per_s * ask,
            # over the whole run, from before the first round prepared to the last answer
            "accepted_per_s": round(rate, 2),
            "share_of_limit": round(rate / limit_per_s, 3),
            # as Tuya's limit saw it, from the first command to the last (the run's start-up and its end
            # left out: what a long rollout sustains)
            "sustained_per_s": sustained,
            "sustained_share_of_limit": round(sustained / limit_per_s, 3),
            "first_command_after_s": round(truth["first_ms"] / 1000 - wall0, 3) if passed else None,
            "max_in_any_second": truth.get("max_in_any_second"),
            "requests_per_s": round((accepted + refused) / elapsed, 2),
            "refused_1199": refused,
            "per_second": truth.get("per_second"),
            "refused_per_second": truth.get("refused_per_second"),
            "refused_early_ms": truth.get("refused_early_ms"),
            "gap_ms": truth.get("gap_ms"),
            "attempts_recorded": attempts,
            "attempts_equal_accepted": attempts == accepted,
        }
    finally:
        for t in tuya_clients:
            await t.aclose()
        sim.terminate()
        await asyncio.to_thread(sim.wait, 30)
        await clients[0].drop_database(name)
        for c in clients:
            c.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--limit", type=float, default=20.0, help="Tuya's upgrade API limit (calls/s)")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--dispatch-devices", type=int, default=2000)
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2], help="dispatching replicas")
    parser.add_argument("--ask", type=float, default=1.0, help="the region's rate, times Tuya's limit")
    parser.add_argument("--only", choices=["planning", "dispatch"], default=None)
    parser.add_argument(
        "--lease", type=float, default=5.0, help="the project's pace lease (s; 0: replicas race for slots)"
    )
    args = parser.parse_args()
    results: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "load": os.getloadavg()},
    }
    if args.only != "dispatch":
        results["planning"] = asyncio.run(bench_planning(args.devices))
    if args.only != "planning":
        results["dispatch"] = [
            asyncio.run(
                bench_dispatch(args.limit, args.seconds, args.dispatch_devices, n, args.ask, args.lease)
            )
            for n in args.replicas
        ]
    print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
