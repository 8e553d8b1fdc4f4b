"""pairing benchmark: session creation against Tuya's rate limit, and push -> session-updated latency.

tuya-sim (the Tuya cloud, its per-project rate limit set to `--limit` requests/s), ingest and pairing run as
processes on the local stack, as deployed. Two figures, printed beside the limit in the same run:

- sessions created per second: `--sessions` concurrent `POST /v1/pairing-sessions`, each one Tuya token
  call paced by pairing's client (`FLEET_PAIRING_TUYA_RATE_PER_S` = the limit). The limit is the ceiling:
  the goal is >= 90% of it, and no call over it (the simulator would refuse it with 1199: counted).
- push -> session updated: one device activates per session, all sessions open at once; latency from the
  activation (the simulator's `bindUser` push) to the `pairing.device.paired.v1` event pairing publishes right
  after the session write (its envelope time), p50/p99 (goal p99 < 1 s). Polling is off (interval 600 s), so
  every update comes from the push path.

    uv run python bench/pairing.py [--sessions 200] [--limit 20]

Needs the local stack (`just up`; `eval "$(uv run devstack env)"`). Writes bench/results/pairing.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import secrets
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pulsar
from pulsar import asyncio as pa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the e2e rig's process helpers: one way to run the services

from fleet_contracts import topics  # noqa: E402
from tests.e2e.ingest.sim_support import SimProcess  # noqa: E402
from tests.e2e.ingest.support import IngestProcess, TopicReader  # noqa: E402
from tests.e2e.pairing.support import each  # noqa: E402
from tests.support import ServiceProcess, Stack  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "pairing.json"


def stack() -> Stack:
    missing = [
        v for v in ("FLEET_PULSAR_URL", "FLEET_PULSAR_ADMIN_URL", "FLEET_MONGODB_URI") if v not in os.environ
    ]
    if missing:
        raise SystemExit(f'{", ".join(missing)} not set: run `eval "$(uv run devstack env)"` first')
    return Stack(
        os.environ["FLEET_PULSAR_URL"], os.environ["FLEET_PULSAR_ADMIN_URL"], os.environ["FLEET_MONGODB_URI"]
    )


def pct(values: list[float], q: float) -> float | None:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1) if ordered else None


async def run(args: argparse.Namespace) -> dict[str, Any]:
    s = stack()
    unique = secrets.token_hex(4)
    access_id, secret, key = f"pbench{unique}", secrets.token_hex(16), secrets.token_urlsafe(32)
    logs = Path(tempfile.mkdtemp(prefix="pairing-bench-"))
    sim = SimProcess(
        s, access_id, secret, logs / "sim.log",
        rate_limit_rps=args.limit, rate_limit_burst=args.limit, pairing_token_lifetime_s=600, devices=1,
    )  # fmt: skip
    ingest = IngestProcess(s, access_id, secret, f"ingest_pbench_{unique}", logs / "ingest.log")
    pairing = ServiceProcess(
        "pairing",
        log=logs / "pairing.log",
        stack=s,
        env={
            "FLEET_TUYA_ACCESS_ID": access_id,
            "FLEET_TUYA_ACCESS_SECRET": secret,
            "FLEET_TUYA_OPENAPI_URL": sim.url,
            "FLEET_PAIRING_DATABASE": f"pairing_bench_{unique}",
            "FLEET_PAIRING_SUBSCRIPTION": f"pairing-bench-{unique}",
            "FLEET_PAIRING_API_KEYS": f"bench:{key}:operator",
            "FLEET_PAIRING_TUYA_RATE_PER_S": str(args.limit),
            "FLEET_PAIRING_TUYA_BURST": "1",
            "FLEET_PAIRING_POLL_INTERVAL_S": "600",
            "FLEET_PAIRING_SETTLE_S": "600",
        },
    )
    client = pa.Client(s.pulsar_url, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Warn))
    events = await TopicReader.open(client, topics.PAIRING_EVENTS.name, f"bench-pair-{unique}", access_id)
    try:
        sim.start()
        await sim.wait_ready()
        ingest.start()
        pairing.start()
        await ingest.wait_ready()
        await pairing.wait_ready()
        async with (
            sim.control() as ctl,
            httpx.AsyncClient(
                base_url=pairing.url, headers={"Authorization": f"Bearer {key}"}, timeout=120
            ) as api,
        ):
            fleet = (
                await ctl.post("/sim/fleet", json={"devices": 10, "homes": 10, "unbound": args.sessions})
            ).json()
            homes, devices = fleet["homes"], fleet["unbound_device_ids"]
            # warm up: the client's access token and connections, outside the measured window
            await api.post(
                "/v1/pairing-sessions",
                json={"owner_uid": homes[0]["owner_uid"], "home_id": homes[0]["home_id"], "mode": "EZ"},
            )
            await asyncio.sleep(1.5)  # the buckets refill

            async def create(i: int) -> httpx.Response:
                home = homes[i % len(homes)]
                body = {"owner_uid": home["owner_uid"], "home_id": home["home_id"], "mode": "EZ"}
                return await api.post("/v1/pairing-sessions", json=body)

            started = time.monotonic()
            answers = await each([create(i) for i in range(args.sessions)], limit=64)
            elapsed = time.monotonic() - started
            created = [a.json() for a in answers if a.status_code == 201]
            refused = [a.status_code for a in answers if a.status_code != 201]
            rate = len(created) / elapsed

            # every session open: one device each activates, paced, while all are open
            activated_at: dict[str, float] = {}

            async def activate(i: int) -> None:
                await asyncio.sleep(i / args.activation_rate)
                token = created[i]["assembled_token"]
                activated_at[created[i]["session"]["token"]] = time.time()
                await ctl.post("/sim/pairing/activate", json={"token": token, "device_ids": [devices[i]]})

            await asyncio.gather(*(activate(i) for i in range(len(created))))
            deadline = time.monotonic() + 120
            paired: dict[str, float] = {}
            while len(paired) < len(created) and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                for body, _ in events.messages:
                    if body["type"] == "pairing.device.paired.v1":
                        paired.setdefault(
                            body["data"]["token"], datetime.fromisoformat(body["time"]).timestamp()
                        )
            latencies = [(paired[t] - at) * 1000 for t, at in activated_at.items() if t in paired]
    finally:
        pairing.kill()
        ingest.kill()
        sim.stop()
        await events.close()
        await client.close()
    return {
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "sessions": args.sessions,
        "tuya_rate_limit_per_s": args.limit,
        "sessions_created_per_s": round(rate, 2),
        "of_limit_pct": round(100 * rate / args.limit, 1),
        "creations_refused": len(refused),
        "push_to_session_updated_ms": {
            "samples": len(latencies),
            "missing": len(created) - len(latencies),
            "p50": pct(latencies, 0.5),
            "p99": pct(latencies, 0.99),
            "max": round(max(latencies), 1) if latencies else None,
        },
        "logs": str(logs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument(
        "--limit", type=float, default=20.0, help="the simulator's Tuya rate limit (requests/s)"
    )
    parser.add_argument("--activation-rate", type=float, default=50.0, help="device activations per second")
    figures = asyncio.run(run(parser.parse_args()))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_bytes(orjson.dumps(figures, option=orjson.OPT_INDENT_2))
    limit = figures["tuya_rate_limit_per_s"]
    latency = figures["push_to_session_updated_ms"]
    print(
        f"sessions created: {figures['sessions_created_per_s']}/s against a Tuya limit of {limit}/s "
        f"({figures['of_limit_pct']}%, {figures['creations_refused']} refused); "
        f"push -> session updated at {figures['sessions']} open sessions: p50 {latency['p50']} ms, "
        f"p99 {latency['p99']} ms ({latency['missing']} missing)"
    )
    print(orjson.dumps(figures, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
