"""status benchmark: device events published to the device topic -> shadow written, end to end.

For 1k and 10k devices, device status events are offered at a fixed rate for a fixed time to the status
service (run as a subprocess, as deployed). Every report carries a new value with its publish time as device
time, so each one changes the shadow, and `status.shadow.changed` (published right after the shadow write)
says when it was written. Reported: sustained rate (published reports / time from the first publish
to the last write, once drained), p50/p99 latency publish -> shadow written (of the newest report in each
write), the service's peak RSS, and the same load through a naive baseline in the same run (one conditional
Mongo update per message, acked one by one).

    uv run python bench/status.py [--rate 5000] [--seconds 20] [--devices 1000,10000]

Needs the local stack (`just up`; `eval "$(uv run devstack env)"`). Writes bench/results/status.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pulsar
from motor.motor_asyncio import AsyncIOMotorClient

from fleet_contracts import topics
from fleet_contracts.device import DeviceStatusReported, DeviceStatusReportedEvent, DpReport, TuyaOrigin

RESULTS = Path(__file__).parent / "results" / "status.json"
PULSAR_URL = os.environ.get("FLEET_PULSAR_URL", "pulsar://127.0.0.1:6650")
MONGODB_URI = os.environ.get("FLEET_MONGODB_URI", "mongodb://127.0.0.1:27017/")
DRAIN_S = 180.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def status_event(device: str, counter: int, now_ms: int) -> bytes:
    event = DeviceStatusReportedEvent.build(
        DeviceStatusReported(
            device_id=device,
            product_id="benchprod",
            origin=TuyaOrigin(protocol=4, push_time_ms=now_ms),
            dps=[DpReport(code="counter", value=counter, device_time_ms=now_ms)],
        ),
        source="/bench",
        tenant="bench",
        region="eu",
    )
    return topics.DEVICE_EVENTS.encode(event)


def offer(client: pulsar.Client, prefix: str, devices: int, rate: float, seconds: float) -> tuple[int, float]:
    """Publish at `rate` for `seconds`, round-robin over the devices; returns (count, start time)."""
    producer = client.create_producer(
        topics.DEVICE_EVENTS.name,
        batching_type=pulsar.BatchingType.KeyBased,
        batching_max_publish_delay_ms=5,
        block_if_queue_full=True,
        max_pending_messages=10_000,
    )
    started = time.time()
    sent = 0
    tick = 0.01
    while (elapsed := time.time() - started) < seconds:
        due = int(elapsed * rate) - sent
        for _ in range(max(due, 0)):
            device = f"{prefix}-{sent % devices:05d}"
            producer.send_async(
                status_event(device, sent, int(time.time() * 1000)), None, partition_key=device
            )
            sent += 1
        time.sleep(tick)
    producer.flush()
    producer.close()
    return sent, started


class WriteWatcher:
    """Reads status's shadow events: the write time of each report (its device time is its publish time)."""

    def __init__(self, client: pulsar.Client, subscription: str, prefix: str) -> None:
        self.consumer = client.subscribe(
            topics.STATUS_SHADOW_EVENTS.name,
            subscription,
            consumer_type=pulsar.ConsumerType.Shared,
            initial_position=pulsar.InitialPosition.Latest,
            receiver_queue_size=5000,
        )
        self.prefix = prefix
        self.latencies: list[float] = []
        self.latest: dict[str, int] = {}  # device -> newest counter its shadow holds
        self.reports = 0
        self.last_write = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                msg = self.consumer.receive(timeout_millis=200)
            except pulsar.Timeout:
                continue
            now = time.time()
            self.consumer.acknowledge(msg)
            event = orjson.loads(msg.data())
            if not event["data"]["device_id"].startswith(self.prefix):
                continue
            device = event["data"]["device_id"]
            for change in event["data"]["changes"]:
                self.latencies.append(now * 1000 - change["new"]["device_time_ms"])
                self.latest[device] = max(self.latest.get(device, -1), int(change["new"]["value"]))
            self.reports += 1
            self.last_write = now

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_status(devices: int, rate: float, seconds: float) -> dict[str, Any]:
    run = uuid.uuid4().hex[:8]
    prefix, database = f"bench{run}", f"status_bench_{run}"
    port = free_port()
    env = {
        **os.environ,
        "FLEET_STATUS_DATABASE": database,
        "FLEET_STATUS_SUBSCRIPTION": f"status-bench-{run}",
        "FLEET_STATUS_INITIAL_POSITION": "latest",
        "FLEET_STATUS_RECONCILE_INTERVAL_S": "0",
        "FLEET_TUYA_ACCESS_SECRET": "",
        "FLEET_HTTP_HOST": "127.0.0.1",
        "FLEET_HTTP_PORT": str(port),
        "FLEET_LOG_LEVEL": "WARNING",
    }
    log = Path(tempfile.gettempdir()) / f"status-bench-{run}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fleet_status"], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )
    client = pulsar.Client(PULSAR_URL, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))
    peak_rss = 0.0
    try:
        _wait_ready(port, proc, log)
        watcher = WriteWatcher(client, f"bench-watch-{run}", prefix)
        watcher.start()
        sampling = threading.Event()

        def sample() -> None:
            nonlocal peak_rss
            while not sampling.is_set():
                peak_rss = max(peak_rss, rss_mib(proc.pid))
                time.sleep(0.5)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        sent, started = offer(client, prefix, devices, rate, seconds)
        # drain: until every device's shadow holds its last report (or give up after DRAIN_S)
        last_counter = {f"{prefix}-{i % devices:05d}": i for i in range(max(0, sent - devices), sent)}
        deadline = time.time() + DRAIN_S
        while time.time() < deadline and any(watcher.latest.get(d, -1) < c for d, c in last_counter.items()):
            time.sleep(0.5)
        drained = all(watcher.latest.get(d, -1) >= c for d, c in last_counter.items())
        watcher.stop()
        sampling.set()
        latencies = watcher.latencies
        # a write covers every earlier report of its device (the newest wins): reports of device k are the
        # counters k, k + devices, ...; latency is measured for the newest report of each write
        index = {d: int(d.rsplit("-", 1)[1]) for d in last_counter}
        written = sum((c - index[d]) // devices + 1 for d, c in watcher.latest.items() if c >= 0)
        elapsed = max(watcher.last_write - started, 1e-9)
        return {
            "devices": devices,
            "offered_rate": rate,
            "offered_seconds": seconds,
            "published": sent,
            "shadow_events": watcher.reports,
            "reports_written": written,
            "rate_msgs_per_s": round(written / elapsed, 1),
            "elapsed_s": round(elapsed, 2),
            "latency_ms_p50": round(percentile(latencies, 0.50), 1),
            "latency_ms_p99": round(percentile(latencies, 0.99), 1),
            "service_peak_rss_mib": round(peak_rss, 1),
            "drained": drained,
        }
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        client.close()
        asyncio.run(_drop(database))


def _wait_ready(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    import urllib.request

    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(log.read_text()[-2000:])
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError("status did not become ready")


async def _drop(database: str) -> None:
    client: AsyncIOMotorClient[dict[str, Any]] = AsyncIOMotorClient(MONGODB_URI)
    try:
        await client.drop_database(database)
    finally:
        client.close()


def run_baseline(devices: int, rate: float, seconds: float) -> dict[str, Any]:
    """Naive writer: one conditional update per message, acked after it, no batching (same offered load)."""
    run = uuid.uuid4().hex[:8]
    prefix, database = f"base{run}", f"status_baseline_{run}"
    client = pulsar.Client(PULSAR_URL, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))
    consumer = client.subscribe(
        topics.DEVICE_EVENTS.name,
        f"baseline-{run}",
        consumer_type=pulsar.ConsumerType.KeyShared,
        initial_position=pulsar.InitialPosition.Latest,
    )
    latencies: list[float] = []
    done = threading.Event()
    handled = 0
    last = 0.0

    def consume() -> None:
        nonlocal handled, last

        async def loop() -> None:
            nonlocal handled, last
            mongo: AsyncIOMotorClient[dict[str, Any]] = AsyncIOMotorClient(MONGODB_URI)
            shadows = mongo[database].shadows
            while not done.is_set():
                try:
                    msg = await asyncio.to_thread(consumer.receive, 200)
                except pulsar.Timeout:
                    continue
                event = orjson.loads(msg.data())
                if not event["data"]["device_id"].startswith(prefix):
                    consumer.acknowledge(msg)
                    continue
                dp = event["data"]["dps"][0]
                device = event["data"]["device_id"]
                # newer-wins guard in the filter; one round trip per message
                await shadows.update_one(
                    {"_id": device, "$or": [{"t": {"$lt": dp["device_time_ms"]}}, {"t": {"$exists": False}}]},
                    {"$set": {"value": dp["value"], "t": dp["device_time_ms"]}},
                    upsert=False,
                )
                consumer.acknowledge(msg)
                handled += 1
                last = time.time()
                latencies.append(last * 1000 - dp["device_time_ms"])
            await mongo.drop_database(database)
            mongo.close()

        asyncio.run(loop())

    async def seed() -> None:
        mongo: AsyncIOMotorClient[dict[str, Any]] = AsyncIOMotorClient(MONGODB_URI)
        await mongo[database].shadows.insert_many([{"_id": f"{prefix}-{i:05d}"} for i in range(devices)])
        mongo.close()

    asyncio.run(seed())
    worker = threading.Thread(target=consume, daemon=True)
    worker.start()
    sent, started = offer(client, prefix, devices, rate, seconds)
    # the baseline falls far behind: measure what it did within a bounded drain, not until it catches up
    time.sleep(min(DRAIN_S, 10))
    done.set()
    worker.join(30)
    consumer.close()
    client.close()
    elapsed = max(last - started, 1e-9)
    return {
        "devices": devices,
        "offered_rate": rate,
        "published": sent,
        "handled": handled,
        "rate_msgs_per_s": round(handled / elapsed, 1),
        "latency_ms_p50": round(percentile(latencies, 0.50), 1),
        "latency_ms_p99": round(percentile(latencies, 0.99), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rate", type=float, default=5000.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--devices", default="1000,10000")
    parser.add_argument("--baseline-seconds", type=float, default=10.0)
    args = parser.parse_args()
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "goal": {"rate_msgs_per_s": 5000, "p99_ms": 500},
        "status": [],
        "baseline_naive": [],
    }
    for devices in (int(d) for d in args.devices.split(",")):
        status = run_status(devices, args.rate, args.seconds)
        print(f"status   {devices:>6} devices: {status}", flush=True)
        results["status"].append(status)
        baseline = run_baseline(devices, args.rate, args.baseline_seconds)
        print(f"baseline {devices:>6} devices: {baseline}", flush=True)
        results["baseline_naive"].append(baseline)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
