"""Benchmark: ingest vs the official Tuya Python connector's consumer path, on the same simulated stream.

For each fleet size (1k and 10k devices) and each consumer, a fresh Tuya project (tenant) is provisioned on
the local Pulsar, and a simulator publishes encrypted Tuya status reports (AES-ECB, the only mode the
connector decrypts) keyed by device id:

  burst    N messages, encrypted beforehand and published as fast as Pulsar takes them: sustained
           messages/s from the first to the last message done (ingest: confirmed on the internal topic;
           connector: decrypted and handed to its listener, then acked over the WebSocket).
  latency  a steady RATE messages/s for a few seconds: p50/p99 from the simulator's publish to done.

The connector (tuya-connector-python 0.1.2, `tuya_connector.openpulsar.TuyaOpenPulsar`) reads Pulsar's
WebSocket API as it reads Tuya's (`ws://…/ws/v2/consumer/persistent/{id}/out/event/{id}-sub`, Failover);
ingest runs as its own process (`python -m fleet_ingest`), as deployed.

    eval "$(uv run devstack env)" && uv run python bench/ingest.py [--messages 30000] [--rate 1000]

Prints the figures and writes bench/results/ingest.json.
"""

from __future__ import annotations

import argparse
import asyncio
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
from pathlib import Path
from typing import Any

import orjson
import pulsar
from pulsar import asyncio as pa

from fleet_contracts import topics
from fleet_shared.provisioning import provision
from fleet_shared.tuya.codec import EncryptionMode, PushCodec

RESULTS = Path(__file__).resolve().parent / "results" / "ingest.json"
PULSAR_URL = os.environ.get("FLEET_PULSAR_URL", "pulsar://127.0.0.1:6650")
ADMIN_URL = os.environ.get("FLEET_PULSAR_ADMIN_URL", "http://127.0.0.1:8080")
MONGODB_URI = os.environ.get("FLEET_MONGODB_URI", "mongodb://127.0.0.1:27017/")


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def now_ms() -> int:
    return int(time.time() * 1000)


class Simulator:
    """Publishes Tuya-format status reports for a fleet, as Tuya does: keyed by device id, encrypted."""

    def __init__(self, client: pa.Client, access_id: str, secret: str, devices: int) -> None:
        self.client = client
        self.topic = topics.tuya_event_topic(access_id)
        self.codec = PushCodec(secret)
        self.devices = [f"bdev{n:06d}" for n in range(devices)]
        self.seq = 0

    def _message(self) -> tuple[bytes, dict[str, str], str]:
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
        """Publish `count` messages (at `rate`/s if set). A burst is encrypted first, so the simulator's own
        Python encryption does not cap the rate the consumers are offered."""
        prepared = [self._message() for _ in range(count)] if not rate else None
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
            payload, props, key = prepared[i] if prepared is not None else self._message()
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


def fresh_project(prefix: str) -> tuple[str, str]:
    access_id = f"{prefix}{uuid.uuid4().hex[:10]}"
    provision(ADMIN_URL, access_id)
    return access_id, secrets.token_hex(16)


async def wait_for(predicate: Any, within: float) -> bool:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


# -- the official connector -----------------------------------------------------------------------------


async def bench_connector(
    client: pa.Client, devices: int, messages: int, rate: float, seconds: float
) -> dict[str, Any]:
    from tuya_connector.openpulsar import TuyaOpenPulsar

    logging.getLogger("tuya iot").setLevel(logging.WARNING)
    access_id, secret = fresh_project("bconn")
    done: list[tuple[float, str]] = []
    lock = threading.Lock()

    def listener(decrypted: str) -> None:
        with lock:
            done.append((time.time(), decrypted))

    consumer = TuyaOpenPulsar(access_id, secret, ADMIN_URL.replace("http://", "ws://") + "/", "event")
    consumer.add_message_listener(listener)
    consumer.start()
    try:
        if not await wait_for(
            lambda: getattr(getattr(consumer.ws_app, "sock", None), "status", 0) == 101, 30
        ):
            raise RuntimeError("the connector did not connect to Pulsar's WebSocket API")
        sim = Simulator(client, access_id, secret, devices)
        return await _measure(
            sim,
            messages,
            rate,
            seconds,
            lambda: len(done),
            lambda: _connector_latencies(done),
            lambda i: done[i][0],
        )
    finally:
        consumer.stop()


def _connector_latencies(done: list[tuple[float, str]]) -> list[float]:
    out = []
    for at, text in done:
        t = orjson.loads(text)["status"][0]["t"]
        out.append(at * 1000 - t)
    return out


# -- ingest ---------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def bench_ingest(
    client: pa.Client, devices: int, messages: int, rate: float, seconds: float
) -> dict[str, Any]:
    access_id, secret = fresh_project("bingest")
    port = free_port()
    env = {
        **os.environ,
        "FLEET_PULSAR_URL": PULSAR_URL,
        "FLEET_MONGODB_URI": MONGODB_URI,
        "FLEET_TUYA_ACCESS_ID": access_id,
        "FLEET_TUYA_ACCESS_SECRET": secret,
        "FLEET_INGEST_DATABASE": f"ingest_bench_{access_id}",
        "FLEET_HTTP_HOST": "127.0.0.1",
        "FLEET_HTTP_PORT": str(port),
        "FLEET_LOG_LEVEL": "WARNING",
    }
    reader = await client.subscribe(
        topics.DEVICE_EVENTS.name,
        f"bench-{access_id}",
        consumer_type=pulsar.ConsumerType.Exclusive,
        initial_position=pulsar.InitialPosition.Latest,
        receiver_queue_size=10_000,
    )
    done: list[tuple[int, int]] = []  # (internal publish time, device time = simulator publish time)

    async def read() -> None:
        while True:
            msg = await reader.receive()
            body = orjson.loads(msg.data())
            if body["tenant"] == access_id:
                done.append((msg.publish_timestamp(), body["data"]["dps"][0]["device_time_ms"]))
            await reader.acknowledge(msg)

    log = Path(tempfile.gettempdir()) / f"{access_id}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(  # noqa: ASYNC220 - started once, before measuring
            [sys.executable, "-m", "fleet_ingest"], env=env, stdout=out, stderr=out
        )
    reading = asyncio.ensure_future(read())
    try:
        ready = await wait_for(lambda: _ready(port), 60)
        if not ready:
            raise RuntimeError(f"ingest did not become ready: {log.read_text()[-2000:]}")
        sim = Simulator(client, access_id, secret, devices)
        return await _measure(
            sim,
            messages,
            rate,
            seconds,
            lambda: len(done),
            lambda: [float(p - t) for p, t in done],
            lambda i: done[i][0] / 1000,
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        await reader.unsubscribe()
        await asyncio.gather(reading, return_exceptions=True)


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


# -- shared measurement ---------------------------------------------------------------------------------


async def _measure(
    sim: Simulator,
    messages: int,
    rate: float,
    seconds: float,
    count: Any,
    latencies: Any,
    done_at: Any,
) -> dict[str, Any]:
    # burst: throughput
    publish_s = await sim.publish(messages)
    if not await wait_for(lambda: count() >= messages, 600):
        raise RuntimeError(f"only {count()} of {messages} messages were done")
    burst_s = done_at(-1) - done_at(0)
    # steady rate: latency
    before = count()
    steady = int(rate * seconds)
    await sim.publish(steady, rate=rate)
    if not await wait_for(lambda: count() >= before + steady, 300):
        raise RuntimeError(f"only {count() - before} of {steady} steady messages were done")
    lat = latencies()[before:]
    return {
        "messages": messages,
        "simulator_publish_s": round(publish_s, 3),
        "simulator_msgs_per_s": round(messages / publish_s, 1),
        "burst_s": round(burst_s, 3),
        "throughput_msgs_per_s": round(messages / burst_s, 1),
        "latency_rate_msgs_per_s": rate,
        "latency_samples": len(lat),
        "latency_p50_ms": round(pct(lat, 0.50), 2),
        "latency_p99_ms": round(pct(lat, 0.99), 2),
        "latency_mean_ms": round(statistics.fmean(lat), 2) if lat else None,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=30_000, help="burst size per run")
    parser.add_argument("--rate", type=float, default=1000.0, help="steady rate for the latency phase")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the latency phase")
    parser.add_argument("--devices", type=int, nargs="*", default=[1000, 10_000])
    args = parser.parse_args()

    client = pa.Client(PULSAR_URL, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))
    runs: list[dict[str, Any]] = []
    try:
        for devices in args.devices:
            row: dict[str, Any] = {"devices": devices}
            for name, bench in (("tuya_connector", bench_connector), ("ingest", bench_ingest)):
                result = await bench(client, devices, args.messages, args.rate, args.seconds)
                row[name] = result
                print(
                    f"{devices:>6} devices  {name:<15} {result['throughput_msgs_per_s']:>9.0f} msg/s   "
                    f"p50 {result['latency_p50_ms']:>7.1f} ms   p99 {result['latency_p99_ms']:>7.1f} ms "
                    f"(at {args.rate:.0f} msg/s)",
                    flush=True,
                )
            row["speedup"] = round(
                row["ingest"]["throughput_msgs_per_s"] / row["tuya_connector"]["throughput_msgs_per_s"], 2
            )
            print(f"{devices:>6} devices  ingest / connector throughput: {row['speedup']}x", flush=True)
            runs.append(row)
    finally:
        await client.close()

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_bytes(
        orjson.dumps(
            {
                "benchmark": "ingest",
                "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "host": {
                    "python": platform.python_version(),
                    "cpus": os.cpu_count(),
                    "machine": platform.machine(),
                },
                "pulsar_url": PULSAR_URL,
                "baseline": "tuya-connector-python 0.1.2 TuyaOpenPulsar over Pulsar's WebSocket API",
                "params": vars(args),
                "runs": runs,
            },
            option=orjson.OPT_INDENT_2,
        )
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    asyncio.run(main())
