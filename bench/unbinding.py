"""unbinding benchmark: removals per second against the simulator's Tuya removal rate, and QR scan -> result.

The simulator (a process) holds a fleet of strongly bound devices and enforces a removal rate (`--tuya-rate`,
its removal APIs' own limit: a removal over it is refused 1199 and does nothing). The unbinding service (a
process, as deployed) paces its removals at that rate and gets `--devices` devices in batches of 1,000 with
quotas raised. Reported, all from the same run:
- the limit: the configured rate, and the most removals the simulator accepted in any one second (its
  ground truth; must never be above the limit);
- removals/s sustained: removals / time from the first to the last removal (goal >= 95% of the limit);
- refusals the simulator answered (1199 means the service went over the limit and had to retry), and per
  10 s from the first removal the removals and 1199 refusals (whether the rate was lost evenly, at the
  start or end, or in bursts);
- CPU time of the service and of the simulator per device (less sensitive to a loaded machine), and the
  database server's operations per device (`serverStatus` opcounters, when it has them);
- no device removed twice, and every device with a result;
- p50/p99 time from a device scanning a QR session to its result (`--qr-sessions` sessions of 30 devices),
  split at the moment Tuya (the simulator) removed it: scan -> removal (the QR poll, admission, lookup,
  quota, intent) and removal -> result seen (the final write and the operator's read);
- the machine's load average before and after (the figures of a loaded machine compare within one run).

    uv run python bench/unbinding.py [--devices 10000] [--tuya-rate 50] [--qr-sessions 3]

`--service-src DIR` runs another checkout's unbinding service (its `services/unbinding/src` first on the
path) under the same bench and simulator: a same-run comparison of two versions.

Needs the local stack (`just up`; `eval "$(uv run devstack env)"`). Writes bench/results/unbinding.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
from motor.motor_asyncio import AsyncIOMotorClient
from pymongo.errors import OperationFailure

RESULTS = Path(__file__).parent / "results" / "unbinding.json"
PULSAR_URL = os.environ.get("FLEET_PULSAR_URL", "pulsar://127.0.0.1:6650")
PULSAR_ADMIN_URL = os.environ.get("FLEET_PULSAR_ADMIN_URL", "http://127.0.0.1:8080")
MONGODB_URI = os.environ.get("FLEET_MONGODB_URI", "mongodb://127.0.0.1:27017/")
PRODUCTS = ("sim0plug0cz00001", "sim0ipc00sp00004")
BATCH = 1000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] if ordered else float("nan")


async def _json(port: int, bearer: str, method: str, path: str, body: Any = None) -> Any:
    async with httpx.AsyncClient(timeout=60) as c:
        r = await c.request(
            method, f"http://127.0.0.1:{port}{path}", json=body, headers={"Authorization": f"Bearer {bearer}"}
        )
        r.raise_for_status()
        return r.json()


class Rig:
    def __init__(
        self,
        tmp: Path,
        tuya_rate: float,
        pace: float,
        service_src: str | None = None,
        in_flight: int = 0,
    ) -> None:
        self.tmp = tmp
        self.access_id = f"unbbench{secrets.token_hex(4)}"
        self.secret = secrets.token_hex(16)
        self.control = secrets.token_hex(12)
        self.admin_key, self.operator_key = (
            f"fk_admin_{secrets.token_hex(12)}",
            f"fk_op_{secrets.token_hex(12)}",
        )
        self.database = f"unbinding_bench_{secrets.token_hex(4)}"
        self.sim_port, self.svc_port = free_port(), free_port()
        self.tuya_rate = tuya_rate
        self.pace = pace
        self.service_src = service_src
        self.in_flight = in_flight
        self.procs: list[subprocess.Popen[bytes]] = []

    def _spawn(self, args: list[str], env: dict[str, str], log: str) -> None:
        with (self.tmp / log).open("ab") as out:
            # our own interpreter and console script, with our own arguments
            self.procs.append(subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT))  # noqa: S603

    async def start(self, devices: int) -> None:
        base = {**os.environ, "FLEET_TUYA_ACCESS_ID": self.access_id, "FLEET_TUYA_ACCESS_SECRET": self.secret}
        base.pop("FLEET_HTTP_PORT", None)
        sim_env = {
            **base,
            "FLEET_PULSAR_URL": PULSAR_URL,
            "FLEET_PULSAR_ADMIN_URL": PULSAR_ADMIN_URL,
            "FLEET_SIM_PROVISION": "true",
            "FLEET_SIM_PORT": str(self.sim_port),
            "FLEET_SIM_CONTROL_TOKEN": self.control,
            "FLEET_SIM_DEVICES": "1",
            "FLEET_SIM_RATE_LIMIT_RPS": "0",  # the removal desk's own limit is the one measured
            "FLEET_SIM_PAIRING_EZ_MAX_DEVICES": "30",
            "FLEET_LOG_FORMAT": "json",
        }
        self._spawn([sys.executable, "-m", "fleet_tuya_sim", "serve"], sim_env, "sim.log")
        await self._ready(self.sim_port)
        # a burst of 2 absorbs network jitter between two calls paced exactly at the limit
        await self.sim("PUT", "/sim/unbinding/removals/config", {"rate_per_s": self.tuya_rate, "burst": 2})
        fleet = await self.sim(
            "POST",
            "/sim/fleet",
            {
                "seed": 11,
                "devices": devices,
                "homes": 50,
                "product_ids": list(PRODUCTS),
                "binding_mode": "strong",
            },
        )
        self.devices: list[str] = fleet["bound_device_ids"]
        self.homes: list[dict[str, Any]] = fleet["homes"]
        svc_env = {
            **base,
            "FLEET_PULSAR_URL": PULSAR_URL,
            "FLEET_MONGODB_URI": MONGODB_URI,
            "FLEET_TUYA_OPENAPI_URL": f"http://127.0.0.1:{self.sim_port}",
            "FLEET_HTTP_HOST": "127.0.0.1",
            "FLEET_HTTP_PORT": str(self.svc_port),
            "FLEET_LOG_LEVEL": "WARNING",
            "FLEET_UNBINDING_DATABASE": self.database,
            "FLEET_UNBINDING_API_KEYS": (
                f"bench-admin:{self.admin_key}:admin,brand:{self.operator_key}:operator"
            ),
            "FLEET_UNBINDING_ACCOUNT_DAILY_LIMIT": str(10 * devices),
            "FLEET_UNBINDING_PRODUCT_DAILY_LIMIT": str(10 * devices),
            "FLEET_UNBINDING_APPROVAL_THRESHOLD": "1000",
            # pace + burst <= the limit: no second above it (see fleet_unbinding.adapters.tuya.Pacer)
            "FLEET_UNBINDING_TUYA_REMOVAL_RATE_PER_S": str(self.pace * self.tuya_rate),
            "FLEET_UNBINDING_TUYA_REMOVAL_BURST": str(max(1.0, (1 - self.pace) * self.tuya_rate)),
            "FLEET_UNBINDING_TUYA_LOOKUP_RATE_PER_S": str(4 * self.tuya_rate),
            # removals are latency-bound (lookup, two conditional writes, the call): keep enough devices in
            # flight to fill the limit
            "FLEET_UNBINDING_DEVICE_CONCURRENCY": "64",
            "FLEET_UNBINDING_QR_POLL_INTERVAL_S": "0.25",
            "FLEET_UNBINDING_ALREADY_BOUND_CODES": "113,1106",
        }
        if self.in_flight:
            svc_env["FLEET_UNBINDING_TUYA_REMOVALS_IN_FLIGHT"] = str(self.in_flight)
        if self.service_src:
            svc_env["PYTHONPATH"] = os.pathsep.join(
                [
                    str(Path(self.service_src) / "services" / "unbinding" / "src"),
                    svc_env.get("PYTHONPATH", ""),
                ]
            )
        self._spawn([sys.executable, "-m", "fleet_unbinding"], svc_env, "unbinding.log")
        await self._ready(self.svc_port)
        for product in PRODUCTS:
            await self.api(
                "POST", f"/v1/products/{product}/authorizations/register", {"owner": "brand"}, admin=True
            )

    async def _ready(self, port: int, within: float = 300) -> None:  # a process starts slowly at load 20+
        deadline = time.monotonic() + within
        async with httpx.AsyncClient() as c:
            while time.monotonic() < deadline:
                try:
                    if (await c.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.3)
        raise TimeoutError(f"port {port} not ready; see {self.tmp}")

    async def sim(self, method: str, path: str, body: Any = None) -> Any:
        return await _json(self.sim_port, self.control, method, path, body)

    async def api(self, method: str, path: str, body: Any = None, *, admin: bool = False) -> Any:
        return await _json(self.svc_port, self.admin_key if admin else self.operator_key, method, path, body)

    async def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        client: AsyncIOMotorClient[Any] = AsyncIOMotorClient(MONGODB_URI)
        try:
            await client.drop_database(self.database)
        finally:
            client.close()


async def wait_finished(
    rig: Rig, batch_ids: list[str], within: float, every_s: float = 5.0
) -> list[dict[str, Any]]:
    """Poll the batches' progress, each only until it is finished. Every few seconds, not every second:
    a progress read counts the batch's 1,000 devices, and ten batches read every second would load the
    shared MongoDB-wire server as much as the removals measured (the rate comes from the simulator's
    removal times, not from when the bench notices the end)."""
    deadline = time.monotonic() + within
    states: dict[str, dict[str, Any]] = {}
    while True:
        for b in batch_ids:
            if states.get(b, {}).get("status") != "finished":
                states[b] = await rig.api("GET", f"/v1/batches/{b}")
        if all(s["status"] == "finished" for s in states.values()) or time.monotonic() > deadline:
            # (unfinished past the deadline: reported as such, figures of what was done)
            return [states[b] for b in batch_ids]
        await asyncio.sleep(every_s)


def cpu_seconds(proc: subprocess.Popen[bytes]) -> float:
    """User + system CPU time the process used so far (Linux /proc; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def db_operations() -> dict[str, int]:
    """The MongoDB-wire server's operation counters (`serverStatus.opcounters`; empty when it has none):
    the whole server's, so a comparison needs nothing else writing meanwhile."""
    client: AsyncIOMotorClient[Any] = AsyncIOMotorClient(MONGODB_URI)
    try:
        status = await client.admin.command("serverStatus")
        return {k: int(v) for k, v in (status.get("opcounters") or {}).items()}
    except OperationFailure:  # a server without `serverStatus`: the figure is left out, not the run
        return {}
    finally:
        client.close()


async def list_mode(rig: Rig, devices: list[str]) -> dict[str, Any]:
    chunks = [devices[i : i + BATCH] for i in range(0, len(devices), BATCH)]
    sim_cpu, svc_cpu = (cpu_seconds(p) for p in rig.procs)
    ops_before = await db_operations()
    batches = [await rig.api("POST", "/v1/batches", {"device_ids": c, "reason": "bench"}) for c in chunks]
    expected_s = len(devices) / rig.tuya_rate
    done = await wait_finished(rig, [b["batch_id"] for b in batches], within=3 * expected_s + 120)
    sim_cpu, svc_cpu = cpu_seconds(rig.procs[0]) - sim_cpu, cpu_seconds(rig.procs[1]) - svc_cpu
    ops = {k: v - ops_before.get(k, 0) for k, v in (await db_operations()).items()}
    truth = await rig.sim("GET", "/sim/unbinding/removals")
    # where the rate went: removals and rate-limit refusals per 10 s from the first removal
    line = await rig.sim("GET", "/sim/unbinding/removals/timeline?window_ms=10000")
    span_s = (truth["last_ms"] - truth["first_ms"]) / 1000 if truth["total"] > 1 else float("nan")
    sustained = (truth["total"] - 1) / span_s if span_s and span_s > 0 else float("nan")
    return {
        "finished": all(b["status"] == "finished" for b in done),
        "devices": len(devices),
        "unbound": sum(b["by_state"].get("unbound", 0) for b in done),
        "refused_by_cause": {
            cause: sum(b["refused_by_cause"].get(cause, 0) for b in done)
            for cause in {c for b in done for c in b["refused_by_cause"]}
        },
        "tuya_limit_per_s": rig.tuya_rate,
        "service_pace_per_s": rig.pace * rig.tuya_rate,
        "removals_in_flight_cap": rig.in_flight or None,
        "removals_per_s": round(sustained, 2),
        "share_of_limit": round(sustained / rig.tuya_rate, 4),
        "max_removals_in_one_second": truth["max_rate_per_s"],
        "simulator_refusals": truth["refusals"],
        "removed_twice": len(truth["removed_twice"]),
        "removals_per_s_by_10s": [round(n / 10, 1) for n in line["removed"]],
        "refusals_1199_by_10s": line["refused"],
        # CPU per device: what the service costs, less sensitive to a loaded machine than the rate
        "service_cpu_ms_per_device": round(1000 * svc_cpu / len(devices), 2),
        "simulator_cpu_ms_per_device": round(1000 * sim_cpu / len(devices), 2),
        # the database server's operations per device (every client's: the progress reads included)
        "db_operations_per_device": {k: round(v / len(devices), 2) for k, v in ops.items() if v},
    }


async def qr_mode(rig: Rig, sessions: int, spare: list[str]) -> dict[str, Any]:
    latencies: list[float] = []
    to_removal: list[float] = []
    to_result: list[float] = []
    devices_of_home: dict[str, list[str]] = {}
    truths = {d: await rig.sim("GET", f"/sim/truth/devices/{d}") for d in spare}
    for d, t in truths.items():
        devices_of_home.setdefault(t["uid"], []).append(d)
    operator_uid = rig.homes[0]["owner_uid"]
    candidates = [d for uid, ds in devices_of_home.items() if uid != operator_uid for d in ds]
    for n in range(sessions):
        scanners = candidates[n * 30 : (n + 1) * 30]
        if not scanners:
            break
        batch = await rig.api(
            "POST",
            "/v1/batches",
            {
                "mode": "qr",
                "uid": operator_uid,
                "ssid": "bench",
                "password": secrets.token_hex(6),
                "validity_s": 60,
            },
        )
        token = orjson.loads(batch["qr_payload"])["t"]
        scanned_at = time.time()
        await rig.sim("POST", "/sim/pairing/activate", {"device_ids": scanners, "token": token})
        seen: dict[str, float] = {}
        deadline = time.monotonic() + 120
        while len(seen) < len(scanners) and time.monotonic() < deadline:
            for r in await rig.api("GET", f"/v1/batches/{batch['batch_id']}/results"):
                seen.setdefault(r["device_id"], time.time())
            await asyncio.sleep(0.05)
        latencies += [t - scanned_at for t in seen.values()]
        for d, t in seen.items():
            removed = (await rig.sim("GET", f"/sim/unbinding/removals/devices/{d}"))["removed_at_ms"]
            if removed:
                to_removal.append(removed[0] / 1000 - scanned_at)
                to_result.append(t - removed[0] / 1000)
        try:
            await rig.api("POST", f"/v1/batches/{batch['batch_id']}/cancel")
        except httpx.HTTPStatusError as e:
            if e.response.status_code != 409:  # 409: the session expired and the batch finished already
                raise
    return {
        "scans": len(latencies),
        "p50_s": round(percentile(latencies, 50), 3),
        "p99_s": round(percentile(latencies, 99), 3),
        "scan_to_removal_p50_s": round(percentile(to_removal, 50), 3),
        "scan_to_removal_p99_s": round(percentile(to_removal, 99), 3),
        "removal_to_result_p50_s": round(percentile(to_result, 50), 3),
        "removal_to_result_p99_s": round(percentile(to_result, 99), 3),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="unbinding-bench-"))
    rig = Rig(tmp, args.tuya_rate, args.pace, args.service_src, args.removals_in_flight)
    qr_devices = 30 * args.qr_sessions * 2
    try:
        await rig.start(args.devices + qr_devices)
        listed, spare = rig.devices[: args.devices], rig.devices[args.devices :]
        result = {"list": await list_mode(rig, listed)}
        print(orjson.dumps(result["list"]).decode(), flush=True)  # kept if the QR part fails
        result["qr"] = await qr_mode(rig, args.qr_sessions, spare)
        result["logs"] = str(tmp)
        return result
    finally:
        await rig.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument(
        "--tuya-rate", type=float, default=50.0, help="the simulator's removal limit per second"
    )
    parser.add_argument("--qr-sessions", type=int, default=3)
    parser.add_argument(
        "--pace", type=float, default=0.97, help="the service's removal rate, share of the limit"
    )
    parser.add_argument("--service-src", help="a checkout whose unbinding service to run (comparisons)")
    parser.add_argument(
        "--removals-in-flight", type=int, default=0, help="the service's cap on removals under way (0: none)"
    )
    args = parser.parse_args()
    load_before = os.getloadavg()
    result: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "service_src": args.service_src or "this checkout",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_before": load_before},
        **asyncio.run(run(args)),
    }
    result["machine"]["load_after"] = os.getloadavg()
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
