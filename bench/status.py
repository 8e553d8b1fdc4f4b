"""status benchmark: device events published to the device topic -> shadow written, end to end.

For 1k and 10k devices, device status events are offered at a fixed rate for a fixed time to the status
service (run as a subprocess, as deployed). Every report carries a new value with its publish time as device
time, so each one changes the shadow, and `status.shadow.changed` (published right after the shadow write)
says when it was written. Reported: sustained rate (published reports / time from the first publish
to the last write, once drained), p50/p99 latency publish -> shadow written (of the newest report in each
write), the service's peak RSS, and beside it, measured in the same run:
- the storage ceiling: the same write pattern straight to the database (per device and batch one
  version-conditional replace of the shadow document status writes, carrying its DP, its outbox and its
  history journal, half full on average; a
  device's journal moves every `FLEET_STATUS_JOURNAL_MAX_ROWS` reports: one conditional `$push` of that many
  rows to its history bucket before the replace; commands of 16 statements, 4 in flight), with no bus and
  no service;
- a naive consumer (one conditional Mongo update per message, acked one by one).

Hygiene: every run uses its own database and subscriptions and deletes them when done (the service's
durable subscription too); it prints what else was consuming the device topic (those consumers also get
the bench's events) and the load average. `--runs N` repeats each run and reports medians.

Soak (`--soak`): a simulated week (8 days: one past the 7-day retention) of a 1,000-device fleet, time
compressed through device timestamps, written through status's own domain merge and stores with a
simulated clock (no bus: it measures the database's growth and retention); each simulated day prints the
database size, the shadow write latency (p50/p99 per flush) and the list-query latency (p50/p99 of a page
of 500). Retention deletes expired history buckets each simulated hour.

    uv run python bench/status.py [--rate 5000] [--seconds 20] [--devices 1000,10000] [--runs 3]
        [--compare-src other/services/status/src] [--compare-env KEY=VALUE] [--service-env KEY=VALUE]
        [--drain-s 180] [--ceiling-rounds 3] [--baseline-seconds 10]
    (`--ceiling-rounds 0` and `--baseline-seconds 0` skip those: a quick comparison of two services)
    uv run python bench/status.py --soak [--soak-devices 1000] [--soak-days 8] [--soak-report-every-s 300]

Needs the local stack (`just up`; `eval "$(uv run devstack env)"`). Writes bench/results/status.json
(status-soak.json for the soak).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pulsar
from motor.motor_asyncio import AsyncIOMotorClient
from pymongo import ReplaceOne, UpdateOne

from fleet_contracts import topics
from fleet_contracts.device import DeviceStatusReported, DeviceStatusReportedEvent, DpReport, TuyaOrigin
from fleet_shared.service.telemetry import TracingSettings, sampler_of
from fleet_status.adapters.history import HistoryStore, bucket_id, hour_of
from fleet_status.adapters.shadows import ShadowStore, shadow_to_doc
from fleet_status.domain.events import outbox_for
from fleet_status.domain.journal import Journal
from fleet_status.domain.shadow import (
    AcceptedReading,
    DeviceFacts,
    DpReading,
    PresenceReport,
    Shadow,
    StatusReport,
    merge,
)
from fleet_status.ports import ShadowWrite
from fleet_status.settings import StatusSettings
from fleet_status.views import StatusViews

RESULTS = Path(__file__).parent / "results" / "status.json"
SOAK_RESULTS = Path(__file__).parent / "results" / "status-soak.json"
PULSAR_URL = os.environ.get("FLEET_PULSAR_URL", "pulsar://127.0.0.1:6650")
PULSAR_ADMIN_URL = os.environ.get("FLEET_PULSAR_ADMIN_URL", "http://127.0.0.1:8080")
MONGODB_URI = os.environ.get("FLEET_MONGODB_URI", "mongodb://127.0.0.1:27017/")
DRAIN_S = 180.0
TENANT = "bench"  # the events' Tuya project, and the one the service runs for
# the service's default: a device's journal moves to its history bucket every this many reports
JOURNAL_ROWS = int(StatusSettings.model_fields["status_journal_max_rows"].default)


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
        tenant=TENANT,
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


def _topic_path(topic: str) -> str:
    return topic.removeprefix("persistent://")


def other_consumers(own: set[str]) -> dict[str, int]:
    """Subscriptions of the device topic with connected consumers, other than this bench's: they get the
    bench's events too (and write them wherever they write)."""
    url = f"{PULSAR_ADMIN_URL}/admin/v2/persistent/{_topic_path(topics.DEVICE_EVENTS.name)}/stats"
    try:
        stats = httpx.get(url, timeout=5).raise_for_status().json()
    except httpx.HTTPError as e:
        return {f"(stats unavailable: {e})": 0}
    return {
        name: len(sub.get("consumers", []))
        for name, sub in stats.get("subscriptions", {}).items()
        if sub.get("consumers") and name not in own
    }


def delete_subscription(topic: str, subscription: str) -> None:
    """Remove a durable subscription this bench made (it would keep a backlog of every later message)."""
    name = urllib.parse.quote(subscription, safe="")
    url = f"{PULSAR_ADMIN_URL}/admin/v2/persistent/{_topic_path(topic)}/subscription/{name}?force=true"
    try:
        httpx.delete(url, timeout=10).raise_for_status()
    except httpx.HTTPError as e:
        print(f"could not delete subscription {subscription} of {topic}: {e}", file=sys.stderr)


def machine_load() -> dict[str, Any]:
    return {"loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()]}


def sampler_in(env: dict[str, str]) -> str:
    """The sampler a service started with `env` runs with, as OpenTelemetry describes it (`(not exported)`
    when no exporter is set: then nothing is recorded whatever the sampler)."""
    variables = ("OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG", "FLEET_ZIPKIN_ENDPOINT")
    settings = TracingSettings.model_validate({k: env[k] for k in variables if env.get(k)})
    exporting = any(
        env.get(k)
        for k in ("FLEET_ZIPKIN_ENDPOINT", "OTEL_EXPORTER_ZIPKIN_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
    )
    described = sampler_of(settings, exporting=exporting).get_description()
    if described.startswith("ParentBased{"):  # the root's; the rest is the same for every parent-based one
        described = described.split(",", 1)[0] + "}"
    return described if exporting else f"{described} (not exported)"


def run_status(
    devices: int,
    rate: float,
    seconds: float,
    *,
    src: str | None = None,
    drain_s: float = DRAIN_S,
    service_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """`src`: run the service from this `fleet_status` source tree instead (another branch, same run);
    `service_env`: more environment for the service (e.g. `OTEL_TRACES_SAMPLER=always_off`)."""
    run = uuid.uuid4().hex[:8]
    prefix, database = f"bench{run}", f"status_bench_{run}"
    port = free_port()
    env = {
        **os.environ,
        "FLEET_STATUS_DATABASE": database,
        "FLEET_STATUS_SUBSCRIPTION": f"status-bench-{run}",
        "FLEET_STATUS_INITIAL_POSITION": "latest",
        "FLEET_STATUS_RECONCILE_INTERVAL_S": "0",
        "FLEET_TUYA_ACCESS_ID": TENANT,  # status keeps only its own project's devices
        "FLEET_TUYA_ACCESS_SECRET": "",
        "FLEET_HTTP_HOST": "127.0.0.1",
        "FLEET_HTTP_PORT": str(port),
        "FLEET_LOG_LEVEL": "WARNING",
        **(service_env or {}),
    }
    if src:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (src, os.environ.get("PYTHONPATH"))))
    log = Path(tempfile.gettempdir()) / f"status-bench-{run}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fleet_status"], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )
    client = pulsar.Client(PULSAR_URL, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))
    peak_rss = 0.0
    service_subscription, watch_subscription = f"status-bench-{run}", f"bench-watch-{run}"
    others = other_consumers({service_subscription, watch_subscription})
    load_before = machine_load()
    watcher: WriteWatcher | None = None
    try:
        _wait_ready(port, proc, log)
        watcher = WriteWatcher(client, watch_subscription, prefix)
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
        deadline = time.time() + drain_s
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
            "service_src": src or "this checkout",
            "service_env": service_env or {},
            # which of the messages the service traced (the default: a ratio; the bench sends no traceparent,
            # so status's consume span is each trace's root)
            "sampler": sampler_in(env),
            "others_consuming_the_topic": others,
            "load_before": load_before,
            "load_after": machine_load(),
            "offered_rate": rate,
            "offered_seconds": seconds,
            "published": sent,
            "shadow_events": watcher.reports,
            "reports_written": written,
            "rate_msgs_per_s": round(written / elapsed, 1),
            # shadow writes (one event each) per second, against the storage ceiling's devices/s
            "writes_per_s": round(watcher.reports / elapsed, 1),
            "reports_per_write": round(written / max(watcher.reports, 1), 2),
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
        if watcher is not None:
            watcher.stop()
            watcher.consumer.close()
        client.close()
        delete_subscription(topics.DEVICE_EVENTS.name, service_subscription)
        delete_subscription(topics.STATUS_SHADOW_EVENTS.name, watch_subscription)
        asyncio.run(_drop(database))


def _wait_ready(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    import urllib.request

    deadline = time.time() + 180  # a loaded machine starts a service slowly
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
    consumer.unsubscribe()  # a durable subscription left behind keeps a backlog of every later message
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


def shadow_document(device: str, version: int, journaled: int, hour: int) -> dict[str, Any]:
    """A shadow document exactly as status writes it after a report of the bench's kind: one DP, presence,
    the `shadow changed` event in its outbox and a journal of `journaled` earlier reports."""
    t = hour + version
    before = Shadow(device, "benchprod", max(version - 1, 0))
    report = DeviceFacts(device, (StatusReport((DpReading("counter", version, t),)),), "benchprod")
    result = merge(before, [report], None)
    result.shadow.version = max(version, 1)  # (an event names version 1 or later)
    outbox = outbox_for(result, tenant=TENANT, region="eu", now=datetime.now(UTC))
    rows = tuple(
        AcceptedReading("counter", None, n, n, hour + n) for n in range(version - journaled, version)
    )
    doc = shadow_to_doc(result.shadow, outbox, "ceiling", datetime.now(UTC), Journal(rows, (), hour))
    return {**doc, "version": version}


def run_storage_ceiling(devices: int, rounds: int = 3, journal_rows: int = JOURNAL_ROWS) -> dict[str, Any]:
    """The database alone, with status's write pattern: per device and round (one report each) one
    version-conditional replace of the shadow document status writes (`shadow_document`: its DP, presence,
    outbox and journal; device i holds (i + round) % `journal_rows` journal rows in round `round`: half full
    on average); a device whose journal is full first appends it to its hour bucket with a conditional
    `$push` (one device in `journal_rows` per round), as the writer moves it before the replace that clears
    it. 16 statements per command, 4 in flight (status's defaults). The documents are made before the clock
    starts. Devices written per second is the ceiling for reports of distinct devices."""

    async def go() -> dict[str, Any]:
        database = f"status_ceiling_{uuid.uuid4().hex[:8]}"
        mongo: AsyncIOMotorClient[dict[str, Any]] = AsyncIOMotorClient(MONGODB_URI)
        db = mongo[database]
        ids = [f"dev{i:05d}" for i in range(devices)]
        hour = hour_of(int(time.time() * 1000))

        def row(n: int) -> dict[str, Any]:
            return {"code": "counter", "dp_id": None, "value": n, "raw": n, "t": hour + n}

        try:
            for start in range(0, devices, 1000):
                chunk = range(start, min(start + 1000, devices))
                await db.shadows.insert_many([shadow_document(ids[i], 0, 0, hour) for i in chunk])
                await db.history_buckets.insert_many(
                    [{"_id": bucket_id(ids[i], hour), "keys": [], "dps": []} for i in chunk]
                )
            plan: list[tuple[list[Any], list[Any]]] = []
            for version in range(1, rounds + 1):
                bucket_ops = []
                for i, d in enumerate(ids):
                    if (i + version) % journal_rows:
                        continue  # the journal takes this report
                    rows = [row(version - k) for k in range(journal_rows)]
                    keys = [f"d{r['t']}|counter" for r in rows]
                    bucket_ops.append(
                        UpdateOne(
                            {"_id": bucket_id(d, hour), "keys": {"$nin": keys}},
                            {"$push": {"keys": {"$each": keys}, "dps": {"$each": rows}}},
                        )
                    )
                shadow_ops = [
                    ReplaceOne(
                        {"_id": d, "version": version - 1},
                        shadow_document(d, version, min((i + version) % journal_rows, version), hour),
                    )
                    for i, d in enumerate(ids)
                ]
                plan.append((bucket_ops, shadow_ops))
            gate = asyncio.Semaphore(4)

            async def command(collection: Any, ops: list[Any]) -> None:
                async with gate:
                    result = await collection.bulk_write(ops, ordered=False)
                    missed[0] += len(ops) - result.matched_count

            missed = [0]
            started = time.perf_counter()
            for bucket_ops, shadow_ops in plan:
                # the moves first, then the shadows (which clear the moved journals), as the writer does
                for collection, ops in ((db.history_buckets, bucket_ops), (db.shadows, shadow_ops)):
                    await asyncio.gather(
                        *(command(collection, ops[i : i + 16]) for i in range(0, len(ops), 16))
                    )
            elapsed = time.perf_counter() - started
            sample = shadow_document(ids[0], 1, journal_rows // 2, hour)
            return {
                "devices": devices,
                "rounds": rounds,
                "pattern": f"status's shadow document (~{len(orjson.dumps(sample, default=str))} B) with "
                f"a journal of <{journal_rows} rows; a bucket $push of {journal_rows} rows every "
                f"{journal_rows} reports",
                "bucket_moves": sum(len(b) for b, _ in plan),
                "missed_conditional_writes": missed[0],
                "devices_written_per_s": round(devices * rounds / elapsed, 1),
            }
        finally:
            await mongo.drop_database(database)
            mongo.close()

    return asyncio.run(go())


def median_of(runs: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, Any]:
    return {
        k: statistics.median(r[k] for r in runs)
        for k in keys
        if runs and all(isinstance(r.get(k), int | float) for r in runs)
    }


# --- soak ------------------------------------------------------------------------------------------------


def run_soak(devices: int, days: int, report_every_s: int, retention_days: float) -> dict[str, Any]:
    return asyncio.run(_soak(devices, days, report_every_s, retention_days))


async def _soak(devices: int, days: int, report_every_s: int, retention_days: float) -> dict[str, Any]:
    database = f"status_soak_{uuid.uuid4().hex[:8]}"
    mongo: AsyncIOMotorClient[dict[str, Any]] = AsyncIOMotorClient(MONGODB_URI, tz_aware=True)
    db = mongo[database]
    shadows = ShadowStore(db)
    history = HistoryStore(db, retention=timedelta(days=retention_days))
    await shadows.ensure_indexes()
    start = datetime(2026, 1, 5, tzinfo=UTC)  # simulated; device times and the stores' clock follow it
    await history.ensure_indexes(start)
    views = StatusViews(shadows, history, clock=lambda: start)
    state = {f"dev{i:05d}": Shadow(f"dev{i:05d}") for i in range(devices)}
    per_hour = max(1, 3600 // report_every_s)
    counter = 0
    days_out: list[dict[str, Any]] = []
    try:
        for day in range(days):
            write_ms: list[float] = []
            list_ms: list[float] = []
            deleted = 0
            for hour in range(24):
                now = start + timedelta(days=day, hours=hour)
                now_ms = int(now.timestamp() * 1000)
                # an hour of reports per device, merged as the writer merges a batch: one write per device
                writes, readings, presence = [], {}, {}
                for device_id, shadow in state.items():
                    batch = []
                    for k in range(per_hour):
                        t = now_ms + k * report_every_s * 1000
                        counter += 1
                        dps = (DpReading("counter", counter, t), DpReading("temp", 200 + k % 50, t))
                        batch.append(
                            DeviceFacts(
                                device_id, (StatusReport(dps),), product_id=f"p{hash(device_id) % 10}"
                            )
                        )
                    if hour == 0:
                        batch.append(DeviceFacts(device_id, (PresenceReport(True, now_ms),)))
                    result = merge(shadow, batch, None)
                    readings[device_id] = result.history
                    presence[device_id] = result.presence_history
                    writes.append(ShadowWrite(result.shadow, shadow.version, [], "soak"))
                    state[device_id] = result.shadow
                t0 = time.perf_counter()
                await history.add(readings, presence, now)
                lost = await shadows.write(writes, now)
                write_ms.append((time.perf_counter() - t0) * 1000)
                assert not lost, f"{len(lost)} soak writes lost a race"
                deleted += await history.sweep(now, max_batches=100)
                for product in ("p1", "p7"):
                    t0 = time.perf_counter()
                    await views.devices(product_id=product, home_id=None, online=None, cursor=None, limit=500)
                    list_ms.append((time.perf_counter() - t0) * 1000)
            stats = await db.command("dbStats")
            row = {
                "day": day + 1,
                "db_size_mib": round(float(stats.get("totalSize") or stats.get("storageSize", 0)) / 2**20, 1),
                "history_buckets": await history.buckets.estimated_document_count(),
                "buckets_deleted": deleted,
                "flush_ms_p50": round(statistics.median(write_ms), 1),
                "flush_ms_p99": round(percentile(write_ms, 0.99), 1),
                "list_ms_p50": round(statistics.median(list_ms), 1),
                "list_ms_p99": round(percentile(list_ms, 0.99), 1),
            }
            print(f"soak day {row['day']}: {row}", flush=True)
            days_out.append(row)
    finally:
        await mongo.drop_database(database)
        mongo.close()
    return {
        "devices": devices,
        "days": days,
        "report_every_s": report_every_s,
        "retention_days": retention_days,
        "reports": counter,
        "flush": f"{devices} devices, one simulated hour of reports each, per flush",
        "per_day": days_out,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rate", type=float, default=5000.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--devices", default="1000,10000")
    parser.add_argument("--baseline-seconds", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=1, help="repeat each measurement; medians are reported")
    parser.add_argument(
        "--compare-src",
        help="also run the service from this fleet_status source tree (e.g. main's services/status/src, "
        "from `git archive`), interleaved with this checkout's in each run",
    )
    parser.add_argument(
        "--service-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="environment for this checkout's service (repeatable), e.g. OTEL_TRACES_SAMPLER=always_off",
    )
    parser.add_argument(
        "--compare-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="environment for the compared service (repeatable); with no --compare-src it runs this "
        "checkout's service again with this environment, interleaved",
    )
    parser.add_argument("--drain-s", type=float, default=DRAIN_S, help="give up draining after this long")
    parser.add_argument("--ceiling-rounds", type=int, default=3)
    parser.add_argument("--soak", action="store_true", help="the simulated week instead (see the docstring)")
    parser.add_argument("--soak-devices", type=int, default=1000)
    parser.add_argument("--soak-days", type=int, default=8)
    parser.add_argument("--soak-report-every-s", type=int, default=300)
    parser.add_argument("--soak-retention-days", type=float, default=7.0)
    args = parser.parse_args()
    context = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), **machine_load()},
        "mongodb_uri": MONGODB_URI,
        "command": " ".join(sys.argv),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if args.soak:
        soak = run_soak(args.soak_devices, args.soak_days, args.soak_report_every_s, args.soak_retention_days)
        SOAK_RESULTS.parent.mkdir(parents=True, exist_ok=True)
        SOAK_RESULTS.write_text(orjson.dumps({**context, "soak": soak}, option=orjson.OPT_INDENT_2).decode())
        print(f"wrote {SOAK_RESULTS}")
        return
    results: dict[str, Any] = {
        **context,
        "goal": {"rate_msgs_per_s": 5000, "p99_ms": 1000},
        "status": [],
        "status_compared": [],
        "storage_ceiling": [],
        "baseline_naive": [],
        "medians": [],
    }
    keys = (
        "rate_msgs_per_s",
        "writes_per_s",
        "reports_per_write",
        "latency_ms_p50",
        "latency_ms_p99",
        "service_peak_rss_mib",
    )
    own_env = dict(kv.split("=", 1) for kv in args.service_env)
    compare_env = dict(kv.split("=", 1) for kv in args.compare_env)
    comparing = bool(args.compare_src or args.compare_env)
    for devices in (int(d) for d in args.devices.split(",")):
        runs: dict[str, list[dict[str, Any]]] = {
            "status": [],
            "status_compared": [],
            "storage_ceiling": [],
            "baseline_naive": [],
        }
        for i in range(args.runs):
            # with --compare-src the two alternate which goes first, so neither always gets the quieter slot
            order = [False, True] if i % 2 == 0 else [True, False]
            for compared in order if comparing else [False]:
                result = run_status(
                    devices,
                    args.rate,
                    args.seconds,
                    src=args.compare_src if compared else None,
                    drain_s=args.drain_s,
                    service_env=compare_env if compared else own_env,
                )
                if not compared:
                    status = result
                    print(f"status   {devices:>6} devices, run {i + 1}: {result}", flush=True)
                else:
                    print(f"compared {devices:>6} devices, run {i + 1}: {result}", flush=True)
                    runs["status_compared"].append(result)
                    results["status_compared"].append(result)
            measured = [("status", status)]
            if args.ceiling_rounds > 0:  # 0: skipped (a quick comparison of two services)
                ceiling = run_storage_ceiling(devices, args.ceiling_rounds)
                print(f"ceiling  {devices:>6} devices, run {i + 1}: {ceiling}", flush=True)
                measured.append(("storage_ceiling", ceiling))
            if args.baseline_seconds > 0:
                baseline = run_baseline(devices, args.rate, args.baseline_seconds)
                print(f"baseline {devices:>6} devices, run {i + 1}: {baseline}", flush=True)
                measured.append(("baseline_naive", baseline))
            for name, value in measured:
                runs[name].append(value)
                results[name].append(value)
        median = {
            "devices": devices,
            "runs": args.runs,
            "sampler": runs["status"][0]["sampler"] if runs["status"] else None,
            "sampler_compared": runs["status_compared"][0]["sampler"] if runs["status_compared"] else None,
            "status": median_of(runs["status"], keys),
            "status_compared": median_of(runs["status_compared"], keys) if comparing else None,
            "storage_ceiling_devices_per_s": median_of(runs["storage_ceiling"], ("devices_written_per_s",)),
            "baseline_naive": median_of(runs["baseline_naive"], keys),
        }
        print(f"median   {devices:>6} devices: {median}", flush=True)
        results["medians"].append(median)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
