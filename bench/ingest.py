"""Benchmark: ingest vs the official Tuya connector's consumer and the raw pass-through ceiling, same stream.

For each fleet size (1k and 10k devices) and each consumer, a fresh Tuya project (tenant) is provisioned on
the local Pulsar with its subscription `{id}-sub` (Failover), and a simulator publishes encrypted Tuya status
reports (AES-ECB, the only mode the connector decrypts) keyed by device id, as Tuya does:

  backlog  N messages are published first (as after an outage or a deploy), then the consumer starts:
           messages/s from the first message done to the last, and CPU per message. The simulator's rate
           cannot cap this figure. Ingest checks every message older than its process against its dedup
           store (MongoDB; FerretDB in the dev stack, patched to answer `$in` from its `_id` index).
  live     then N more published as fast as the simulator can (pre-encrypted) while the consumer runs:
           messages/s first to last done; the simulator's own rate is printed beside it, as it may cap it.
  latency  then a steady RATE messages/s for a few seconds: p50/p99 from the simulator's publish to done.

What each side does per message, and what "done" means:

  tuya_connector  tuya-connector-python 0.1.2 `TuyaOpenPulsar` reads Pulsar's WebSocket API as it reads
                  Tuya's (`ws://…/ws/v2/consumer/persistent/{id}/out/event/{id}-sub`, Failover): JSON frame,
                  base64, AES-ECB decrypt, unpad, hands the plaintext string to the listener (done), acks the
                  frame. No validation, no de-duplication, nothing published, no delivery guarantee (it acks
                  even if the listener fails).
  raw_passthrough the ceiling (issue 15's goal: ingest >= 70% of it): bench/passthrough.py, plain
                  pulsar-client in its own process, forwards each push's bytes unchanged to a topic of the
                  project's own and acks after the broker confirmed the copy. Done = the copy's publish time.
  ingest          `python -m fleet_ingest` as deployed, on the native Pulsar protocol: strict JSON envelope,
                  AES-ECB, strict JSON payload, typed Tuya message, contract event (pydantic), de-duplication
                  (window + MongoDB store), publish keyed by device id on the internal topic (done = the
                  event's publish time there), ack Tuya after the broker confirmed the publish, metrics and
                  traces (a span pair per received batch; no exporter configured).

CPU per message while draining the backlog: the consumer's (ingest: its processes; connector: this process,
whose main thread sleeps meanwhile) and the broker's (the dev stack's Pulsar standalone, when found).

    eval "$(uv run devstack env)" && uv run python bench/ingest.py [--messages 30000] [--rate 1000]
    uv run --with py-spy python bench/ingest.py --profile /tmp/prof   # py-spy of ingest while draining
    uv run python bench/ingest.py --sides raw_passthrough ingest      # the ceiling and ingest only

For ingest the steady phase's p99 is also split by stage from its own histograms (per batch, bucket upper
bounds): Tuya publish -> receipt, receipt -> sends started (dedup-store lookup, queueing), send -> confirmed.

Prints the figures and writes bench/results/ingest.json (or --out).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import platform
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import orjson
import pulsar
from pulsar import asyncio as pa

from fleet_contracts import topics
from fleet_shared.provisioning import provision
from fleet_shared.pulsar import internals
from fleet_shared.tuya.codec import EncryptionMode, PushCodec

RESULTS = Path(__file__).resolve().parent / "results" / "ingest.json"
PASSTHROUGH = Path(__file__).resolve().parent / "passthrough.py"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def stack_env(name: str) -> str:
    """The dev stack's endpoints come from `devstack env`: never guess ports other stacks may use."""
    value = os.environ.get(name)
    if not value:
        raise SystemExit(f'{name} is not set: run `eval "$(uv run devstack env)"` first')
    return value


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def now_ms() -> int:
    return int(time.time() * 1000)


# -- CPU accounting -------------------------------------------------------------------------------------


def _process_tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                todo.extend(int(c) for c in task.read_text().split())
    return pids


def cpu_seconds(pid: int | None) -> float:
    """user + system CPU of a process and its children (0 if it is gone or unknown)."""
    if pid is None:
        return 0.0
    total = 0
    for p in _process_tree(pid):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def broker_pid() -> int | None:
    """The Pulsar standalone of this dev stack (its command line names the stack's directory)."""
    stack_dir = os.environ.get("FLEET_STACK_DIR")
    if not stack_dir:
        return None
    marker = f"{stack_dir}/pulsar/standalone.conf".encode()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if marker in cmdline.read_bytes():
                return int(cmdline.parent.name)
    return None


class CpuMeter:
    def __init__(self, consumer_pid: int | None) -> None:
        self.pids = {"consumer": consumer_pid, "broker": broker_pid()}
        self.started = {k: cpu_seconds(p) for k, p in self.pids.items()}

    def used(self) -> dict[str, float]:
        return {k: cpu_seconds(p) - self.started[k] for k, p in self.pids.items()}


# -- the simulated cloud --------------------------------------------------------------------------------


Prepared = tuple[bytes, dict[str, str], str]


class Simulator:
    """Publishes Tuya-format status reports for a fleet, as Tuya does: keyed by device id, encrypted."""

    def __init__(self, client: pa.Client, access_id: str, secret: str, devices: int) -> None:
        self.client = client
        self.topic = topics.tuya_event_topic(access_id)
        self.codec = PushCodec(secret)
        self.devices = [f"bdev{n:06d}" for n in range(devices)]
        self.seq = 0

    def message(self) -> Prepared:
        device = self.devices[self.seq % len(self.devices)]
        self.seq += 1
        t = now_ms()
        data = {
            "dataId": f"{device}-{self.seq}",
            "devId": device,
            "status": [{"code": "n", "value": self.seq, "t": t}],
        }
        encoded = self.codec.encode(data, protocol=4, mode=EncryptionMode.ECB, t=t)
        return encoded.payload(), encoded.properties, device

    async def publish(self, count: int, rate: float = 0.0) -> float:
        """Publish `count` messages (at `rate`/s if set). A backlog is encrypted first, so the simulator's
        own Python encryption does not slow its publishing."""
        prepared = [self.message() for _ in range(count)] if not rate else None
        producer = await self.client.create_producer(
            self.topic,
            batching_enabled=True,
            batching_type=pulsar.BatchingType.KeyBased,
            batching_max_publish_delay_ms=1,
            max_pending_messages=10_000,
        )
        started = time.monotonic()
        window: list[asyncio.Future[Any]] = []
        for i in range(count):
            payload, props, key = prepared[i] if prepared is not None else self.message()
            window.append(asyncio.ensure_future(producer.send(payload, properties=props, partition_key=key)))
            if len(window) >= 5000:
                await asyncio.gather(*window)
                window = []
            if rate and i % 20 == 19:
                ahead = (i + 1) / rate - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.gather(*window)
                    window = []
                    await asyncio.sleep(ahead)
        await asyncio.gather(*window)
        await producer.close()
        return time.monotonic() - started


async def fresh_project(client: pa.Client, admin_url: str, prefix: str) -> tuple[str, str]:
    """A new Tuya project with its Failover subscription `{id}-sub` already there (Tuya creates it when the
    message service is enabled), so what is published before a consumer connects waits for it."""
    access_id = f"{prefix}{uuid.uuid4().hex[:10]}"
    provision(admin_url, access_id)
    consumer = await client.subscribe(
        topics.tuya_event_topic(access_id),
        topics.tuya_subscription(access_id),
        consumer_type=pulsar.ConsumerType.Failover,
        initial_position=pulsar.InitialPosition.Earliest,
    )
    await consumer.close()
    return access_id, secrets.token_hex(16)


async def wait_for(predicate: Callable[[], bool], within: float, every: float = 0.05) -> bool:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(every)
    return True


class Side(Protocol):
    """One consumer under test."""

    poll_s: float

    async def start(self) -> None: ...
    def pid(self) -> int | None: ...
    def count(self) -> int: ...
    async def times(self, total: int) -> list[tuple[float, float]]:
        """(done, produced) in ms for the first `total` messages done, in order of completion."""
        ...

    async def stop(self) -> None: ...


async def until_done(side: Side, total: int, within: float = 600) -> None:
    if not await wait_for(lambda: side.count() >= total, within, side.poll_s):
        raise RuntimeError(f"only {side.count()} of {total} messages were done")


def rate_of(times: list[tuple[float, float]]) -> dict[str, float]:
    done = sorted(at for at, _ in times)
    seconds = (done[-1] - done[0]) / 1000
    return {"seconds": round(seconds, 3), "msgs_per_s": round(len(times) / seconds, 1)}


async def measure(side: Side, sim: Simulator, args: argparse.Namespace) -> dict[str, Any]:
    """backlog: drain N messages published before the consumer started (throughput, CPU); live: N more
    published as fast as the simulator can while it runs (throughput); steady: a fixed rate (latency)."""
    n = args.messages
    backlog_publish_s = await sim.publish(n)
    await side.start()
    # CPU from the first message done to the last: a process's start-up (imports) is not per-message cost.
    if not await wait_for(lambda: side.count() > 0, 120, side.poll_s / 5):
        raise RuntimeError("no message was done")
    meter, first = CpuMeter(side.pid()), side.count()
    await until_done(side, n)
    used = {k: v / (n - first) for k, v in meter.used().items()}
    live_publish_s = await sim.publish(n)
    await until_done(side, 2 * n)
    steady = int(args.rate * args.seconds)
    stages_before = side.stages() if isinstance(side, IngestSide) else None
    await sim.publish(steady, rate=args.rate)
    await until_done(side, 2 * n + steady, 300)
    stages = stage_quantiles(stages_before, side.stages()) if isinstance(side, IngestSide) else None
    times = await side.times(2 * n + steady)
    lat = [done - produced for done, produced in times[2 * n :]]
    backlog, live = rate_of(times[:n]), rate_of(times[n : 2 * n])
    return {
        "messages": n,
        "backlog": backlog | {"simulator_publish_s": round(backlog_publish_s, 3)},
        "live": live | {"simulator_msgs_per_s": round(n / live_publish_s, 1)},
        "cpu_us_per_msg": {k: round(v * 1e6, 1) for k, v in used.items()},
        "latency_rate_msgs_per_s": args.rate,
        "latency_samples": len(lat),
        "latency_p50_ms": round(pct(lat, 0.50), 2),
        "latency_p99_ms": round(pct(lat, 0.99), 2),
        "latency_mean_ms": round(statistics.fmean(lat), 2) if lat else None,
    } | ({"latency_by_stage_ms": stages} if stages else {})


# -- the official connector -----------------------------------------------------------------------------


class ConnectorSide:
    """TuyaOpenPulsar on Pulsar's WebSocket API, in this process (its main thread sleeps meanwhile)."""

    poll_s = 0.05

    def __init__(self, admin_url: str, access_id: str, secret: str) -> None:
        from tuya_connector.openpulsar import TuyaOpenPulsar

        logging.getLogger("tuya iot").setLevel(logging.WARNING)
        self.done: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self.consumer = TuyaOpenPulsar(
            access_id, secret, admin_url.replace("http://", "ws://") + "/", "event"
        )
        self.consumer.add_message_listener(self._listener)

    def _listener(self, decrypted: str) -> None:
        with self._lock:
            self.done.append((time.time() * 1000, decrypted))

    async def start(self) -> None:
        self.consumer.start()
        ws = self.consumer.ws_app
        if not await wait_for(lambda: getattr(getattr(ws, "sock", None), "status", 0) == 101, 30):
            raise RuntimeError("the connector did not connect to Pulsar's WebSocket API")

    def pid(self) -> int | None:
        return os.getpid()

    def count(self) -> int:
        return len(self.done)

    async def times(self, total: int) -> list[tuple[float, float]]:
        return [(at, orjson.loads(text)["status"][0]["t"]) for at, text in self.done[:total]]

    def redelivered(self) -> int:
        return len(self.done) - len({orjson.loads(text)["dataId"] for _, text in self.done})

    async def stop(self) -> None:
        self.consumer.stop()


# -- ingest ---------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class IngestSide:
    """`python -m fleet_ingest` as its own process; its events read back from the internal topic after the
    fact (their publish times there are what counts), so no reader competes with it for CPU meanwhile."""

    poll_s = 0.25

    def __init__(self, client: pa.Client, access_id: str, secret: str, profile: Path | None) -> None:
        self.client = client
        self.access_id = access_id
        self.port = free_port()
        self.env = {
            **os.environ,
            "FLEET_TUYA_ACCESS_ID": access_id,
            "FLEET_TUYA_ACCESS_SECRET": secret,
            "FLEET_INGEST_DATABASE": f"ingest_bench_{access_id}",
            "FLEET_HTTP_HOST": "127.0.0.1",
            "FLEET_HTTP_PORT": str(self.port),
            "FLEET_LOG_LEVEL": "WARNING",
        }
        self.log = Path(tempfile.gettempdir()) / f"{access_id}.log"
        self.profile = profile
        self.proc: subprocess.Popen[bytes] | None = None
        self.profiler: subprocess.Popen[bytes] | None = None
        self.reader: pa.Consumer | None = None
        self.read: list[tuple[float, float]] = []

    async def start(self) -> None:
        self.reader = await self.client.subscribe(
            topics.DEVICE_EVENTS.name,
            f"bench-{self.access_id}",
            consumer_type=pulsar.ConsumerType.Exclusive,
            initial_position=pulsar.InitialPosition.Latest,
        )
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(  # noqa: ASYNC220 - started once, before measuring
                [sys.executable, "-m", "fleet_ingest"], env=self.env, stdout=out, stderr=out
            )
        if self.profile is not None:
            self.profiler = start_profiler(self.proc.pid, self.profile / f"{self.access_id}.txt")

    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def metrics(self) -> str:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"ingest exited: {self.log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
                return str(r.read().decode())
        except OSError:
            return ""

    def stages(self) -> dict[str, dict[float, float]]:
        """Ingest's per-stage histograms (cumulative bucket counts by upper bound, seconds)."""
        out: dict[str, dict[float, float]] = {}
        for line in self.metrics().splitlines():
            for stage, name in STAGES.items():
                if line.startswith(f"{name}_bucket{{"):
                    bound = line.split('le="', 1)[1].split('"', 1)[0]
                    out.setdefault(stage, {})[float(bound)] = float(line.rsplit(" ", 1)[1])
        return out

    def count(self) -> int:
        """Events ingest has had confirmed, from its /metrics."""
        text = self.metrics()
        if not text:
            return 0
        prefix = "fleet_ingest_events_published_total{"
        return sum(
            int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines() if line.startswith(prefix)
        )

    async def times(self, total: int) -> list[tuple[float, float]]:
        stop_profiler(self.profiler)
        assert self.reader is not None
        while len(self.read) < total:
            msg = await self.reader.receive()
            body = orjson.loads(msg.data())
            if body["tenant"] == self.access_id:
                self.read.append((msg.publish_timestamp(), body["data"]["dps"][0]["device_time_ms"]))
            await self.reader.acknowledge(msg)
        return self.read[:total]

    async def stop(self) -> None:
        stop_profiler(self.profiler)
        terminate(self.proc)
        if self.reader is not None:
            await self.reader.unsubscribe()


#: ingest's histograms along a message's way: Tuya publish -> receipt (per batch, its oldest message),
#: receipt -> sends started (dedup-store lookup and queueing), send -> the bus's confirmation.
STAGES = {
    "receive_lag": "fleet_ingest_consumer_lag_seconds",
    "sequencing": "fleet_ingest_sequencing_delay_seconds",
    "publish": "fleet_ingest_publish_latency_seconds",
}


def stage_quantiles(
    before: dict[str, dict[float, float]], after: dict[str, dict[float, float]]
) -> dict[str, dict[str, float]]:
    """p50 / p99 / max of each stage during the steady phase, as bucket upper bounds (ms; per batch)."""
    out: dict[str, dict[str, float]] = {}
    for stage, buckets in after.items():
        counts = sorted((le, n - before.get(stage, {}).get(le, 0.0)) for le, n in buckets.items())
        total = counts[-1][1] if counts else 0.0
        if not total:
            continue
        row: dict[str, float] = {"batches": total}
        for label, q in (("p50", 0.5), ("p99", 0.99), ("max", 1.0)):
            le = next(le for le, n in counts if n >= q * total)
            row[label] = le * 1000 if le != float("inf") else float("inf")
        out[stage] = row
    return out


def terminate(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM (the graceful stop a deployment sends), SIGKILL after 30 s."""
    if proc is not None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def start_profiler(pid: int, out: Path) -> subprocess.Popen[bytes]:
    out.parent.mkdir(parents=True, exist_ok=True)
    # --gil: only samples holding the GIL, i.e. the Python CPU; --nonblocking: never pause ingest.
    options = ["--subprocesses", "--nonblocking", "--gil", "--format", "raw", "--output", str(out)]
    return subprocess.Popen(  # noqa: S603 - our own fixed command line, py-spy from `uv run --with`
        ["py-spy", "record", "--pid", str(pid), *options],  # noqa: S607
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop_profiler(profiler: subprocess.Popen[bytes] | None) -> None:
    if profiler is not None and profiler.poll() is None:
        profiler.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        with contextlib.suppress(subprocess.TimeoutExpired):
            profiler.wait(30)


# -- the raw pass-through ceiling -----------------------------------------------------------------------


class PassthroughSide:
    """bench/passthrough.py as its own process: raw pulsar-client forwarding each push unchanged, acked after
    the confirmed publish (no decoding). Its copies are read back after the fact, as ingest's events are;
    progress comes from the output topic's broker stats, so nothing in the worker counts or reports."""

    poll_s = 0.25

    def __init__(self, client: pa.Client, admin_url: str, access_id: str) -> None:
        self.client = client
        self.admin_url = admin_url
        self.access_id = access_id
        self.out_topic = f"persistent://{access_id}/out/passthrough"
        self.log = Path(tempfile.gettempdir()) / f"{access_id}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.reader: pa.Consumer | None = None
        self.read: list[tuple[float, float]] = []

    async def start(self) -> None:
        self.reader = await self.client.subscribe(
            self.out_topic,
            f"bench-{self.access_id}",
            consumer_type=pulsar.ConsumerType.Exclusive,
            initial_position=pulsar.InitialPosition.Earliest,
        )
        with self.log.open("wb") as out:
            url = stack_env("FLEET_PULSAR_URL")
            self.proc = subprocess.Popen(  # noqa: ASYNC220, S603 - started once, before measuring
                [sys.executable, str(PASSTHROUGH), url, self.access_id, self.out_topic],
                stdout=out,
                stderr=out,
            )

    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def count(self) -> int:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"pass-through exited: {self.log.read_text()[-2000:]}")
        path = self.out_topic.replace("persistent://", "persistent/")
        try:
            stats = f"{self.admin_url}/admin/v2/{path}/stats"
            with urllib.request.urlopen(stats, timeout=5) as r:  # noqa: S310 - the stack's admin URL
                return int(orjson.loads(r.read())["msgInCounter"])
        except OSError:
            return 0

    async def times(self, total: int) -> list[tuple[float, float]]:
        assert self.reader is not None
        while len(self.read) < total:
            msg = await self.reader.receive()
            self.read.append((msg.publish_timestamp(), float(orjson.loads(msg.data())["t"])))
            await self.reader.acknowledge(msg)
        return self.read[:total]

    async def stop(self) -> None:
        terminate(self.proc)
        if self.reader is not None:
            await self.reader.unsubscribe()


async def close_client(client: pa.Client) -> None:
    """The client's blocking close on a worker thread: `await client.close()` leaves its Python callback to
    a client thread, which aborted this process at exit ("terminate called without an active exception",
    apache/pulsar-client-python#256; see `PulsarBroker._close_client`)."""
    native = internals.native_client(client)
    await (client.close() if native is None else asyncio.to_thread(native.close))


# -- main -----------------------------------------------------------------------------------------------


async def run_side(
    name: str, client: pa.Client, admin_url: str, devices: int, args: argparse.Namespace
) -> dict[str, Any]:
    access_id, secret = await fresh_project(
        client, admin_url, {"tuya_connector": "bconn", "raw_passthrough": "braw"}.get(name, "bing")
    )
    side: Side
    if name == "tuya_connector":
        side = ConnectorSide(admin_url, access_id, secret)
    elif name == "raw_passthrough":
        side = PassthroughSide(client, admin_url, access_id)
    else:
        side = IngestSide(client, access_id, secret, args.profile)
    try:
        result = await measure(side, Simulator(client, access_id, secret, devices), args)
        if isinstance(side, ConnectorSide):
            result["redelivered"] = side.redelivered()
        return result
    finally:
        await side.stop()


def median_of(results: list[dict[str, Any]], *path: str) -> float:
    values = []
    for result in results:
        value: Any = result
        for key in path:
            value = value[key]
        values.append(float(value))
    return round(statistics.median(values), 2)


def summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "backlog_msgs_per_s": median_of(results, "backlog", "msgs_per_s"),
        "live_msgs_per_s": median_of(results, "live", "msgs_per_s"),
        "live_simulator_msgs_per_s": median_of(results, "live", "simulator_msgs_per_s"),
        "latency_p50_ms": median_of(results, "latency_p50_ms"),
        "latency_p99_ms": median_of(results, "latency_p99_ms"),
        "cpu_us_per_msg": {k: median_of(results, "cpu_us_per_msg", k) for k in results[0]["cpu_us_per_msg"]},
    }


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=30_000, help="backlog drained per run")
    parser.add_argument("--rate", type=float, default=1000.0, help="steady rate for the latency phase")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the latency phase")
    parser.add_argument("--devices", type=int, nargs="*", default=[1000, 10_000])
    parser.add_argument("--repeat", type=int, default=1, help="runs per side and fleet size (medians)")
    parser.add_argument("--only", choices=SIDES, help="one side only (e.g. for profiling)")
    parser.add_argument("--sides", choices=SIDES, nargs="+", help="these sides only (e.g. raw and ingest)")
    parser.add_argument("--profile", type=Path, help="py-spy ingest from start to drained, into this dir")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    stack_env("FLEET_MONGODB_URI")  # ingest reads it from the environment
    admin_url = stack_env("FLEET_PULSAR_ADMIN_URL")
    client = pa.Client(stack_env("FLEET_PULSAR_URL"), logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))
    sides = [args.only] if args.only else list(args.sides or SIDES)
    rows: list[dict[str, Any]] = []
    try:
        for devices in args.devices:
            row: dict[str, Any] = {"devices": devices, "runs": {s: [] for s in sides}}
            for _ in range(args.repeat):
                for name in sides:  # interleaved, so both sides see the same background load
                    result = await run_side(name, client, admin_url, devices, args)
                    row["runs"][name].append(result)
                    print(
                        f"{devices:>6} devices  {name:<15} "
                        f"backlog {result['backlog']['msgs_per_s']:>6.0f} msg/s  "
                        f"live {result['live']['msgs_per_s']:>6.0f} msg/s "
                        f"(sim {result['live']['simulator_msgs_per_s']:>6.0f})  "
                        f"cpu {result['cpu_us_per_msg']['consumer']:>6.1f} us/msg "
                        f"(broker {result['cpu_us_per_msg']['broker']:>6.1f})  "
                        f"p50 {result['latency_p50_ms']:>6.1f} ms  p99 {result['latency_p99_ms']:>6.1f} ms "
                        f"(at {args.rate:.0f} msg/s)",
                        flush=True,
                    )
                    if stages := result.get("latency_by_stage_ms"):
                        by_stage = "  ".join(
                            f"{k} p99 {v['p99']:.0f} (max {v['max']:.0f})" for k, v in stages.items()
                        )
                        print(
                            f"{devices:>6} devices  {name:<15} by stage, ms per batch: {by_stage}", flush=True
                        )
            row["median"] = {name: summary(row["runs"][name]) for name in sides}
            for baseline, key in (("tuya_connector", "speedup"), ("raw_passthrough", "of_raw_passthrough")):
                if "ingest" in sides and baseline in sides:
                    ours, theirs = row["median"]["ingest"], row["median"][baseline]
                    row[key] = {
                        phase: round(ours[f"{phase}_msgs_per_s"] / theirs[f"{phase}_msgs_per_s"], 2)
                        for phase in ("backlog", "live")
                    }
                    print(f"{devices:>6} devices  ingest / {baseline} throughput (medians): {row[key]}")
            rows.append(row)
    finally:
        await close_client(client)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(
        orjson.dumps(
            {
                "benchmark": "ingest",
                "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "host": {
                    "python": platform.python_version(),
                    "cpus": os.cpu_count(),
                    "machine": platform.machine(),
                },
                "baseline": "tuya-connector-python 0.1.2 TuyaOpenPulsar over Pulsar's WebSocket API",
                "params": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                "results": rows,
            },
            option=orjson.OPT_INDENT_2,
        )
    )
    print(f"wrote {args.out}")


SIDES = ("tuya_connector", "raw_passthrough", "ingest")

if __name__ == "__main__":
    asyncio.run(main())
