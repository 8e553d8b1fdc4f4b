"""Bus benchmark: PulsarBroker against raw pulsar-client (asyncio API), same topic settings, same run.

    uv run python bench/bus.py [--events N] [--url pulsar://127.0.0.1:6650] [--phases ...]

Phases (each on fresh topics, raw side then broker side):
  publish   N keyed events with up to `--in-flight` confirmed sends outstanding;
  consume   the N-event backlog (receive, pydantic-validate, ack each message), one message at a time;
  latency   live runs paced at each of `--rates` events/s for `--seconds`: end-to-end = handler time -
            send time in the body. Paced, so p50/p99 are the bus's latency, not queueing behind a flood
            (as long as the rate is below what one process can publish and consume at once);
  batching  the same paced measurement at `--batching-rate` (2,000/s) with 1,000 keys for each producer
            batching setting (KeyBased, Default, none), raw and broker: what a batching choice costs.

What each side does, with the same settings (producer: `ProducerOptions()`, i.e. KeyBased batching of up
to 1,000 messages / 128 KiB / 10 ms, no compression; consumer: Shared, receiver queue 1,000; one client
with one IO thread; at most `--in-flight` sends outstanding, bounded by a semaphore on both sides):
  raw      the idiomatic pulsar.asyncio code: `await producer.send(orjson.dumps(event), partition_key=)`;
           `await consumer.receive()`, `Event.model_validate_json(data)`, `await consumer.acknowledge()`.
  broker   what a service writes: `await broker.publish(event, topic, key=)` (FastStream publish: pydantic
           model encoded with orjson, a correlation id, content-type properties); a FastStream subscriber
           `async def on_event(e: Event)` (FastDepends validates the body into `Event`), acked by the
           broker after the handler returns. Access logs off (`logger=None`), as a service at volume would.
Besides throughput, the CPU time of the event loop's thread per message is printed: on a shared machine
it is much steadier than throughput, and it is the broker's own cost (the client's threads excluded).

`--profile DIR` writes a cProfile of the loop's thread for each side's publish and consume phase
(`DIR/{raw,broker}-{publish,consume}.prof`, read with `python -m pstats`); it runs only with the bus's
public API, so the same file profiles another commit's environment. Profiled CPU figures are inflated.
With `--profile-cpu` the profile counts the thread's CPU time (a wall clock charges a native call that waits
for the GIL with the wait).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
import pulsar
from pulsar import asyncio as pa
from pydantic import BaseModel

import fleet_shared.pulsar
from fleet_shared.pulsar import BatchingType, InitialPosition, ProducerOptions, PulsarBroker

RESULTS = Path(__file__).with_name("results") / "bus.json"
SUBSCRIPTION = "bench"
PHASES = ("publish", "consume", "latency", "batching")

# Producer settings compared by the batching phase (the first is the broker's default).
BATCHING: dict[str, ProducerOptions] = {
    "KeyBased 10ms (default)": ProducerOptions(),
    "Default 10ms": ProducerOptions(batching_type=BatchingType.Default),
    "none": ProducerOptions(batching=False),
}


class Event(BaseModel):
    device_id: str
    seq: int
    sent_at: float


@dataclass
class Latency:
    p50_ms: float
    p99_ms: float
    rate_per_s: float
    events: int


@dataclass
class Figures:
    publish_per_s: float | None = None
    consume_per_s: float | None = None
    # CPU time of the event loop's thread per message: the client's own threads and Pulsar excluded.
    publish_cpu_us: float | None = None
    consume_cpu_us: float | None = None
    latency: dict[str, Latency] | None = None
    batching: dict[str, Latency] | None = None


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def event(seq: int, keys: int) -> Event:
    return Event(device_id=f"dev-{seq % keys}", seq=seq, sent_at=time.time())


def fresh_topic(side: str, phase: str) -> str:
    return f"persistent://public/default/bench-bus-{side}-{phase}-{uuid.uuid4().hex[:8]}"


async def pooled(count: int, workers: int, send: Callable[[int], Awaitable[object]]) -> tuple[float, float]:
    """Run `send(i)` for i in range(count) on `workers` tasks; seconds taken, loop-thread CPU us per send."""
    it = iter(range(count))

    async def worker() -> None:
        for i in it:
            await send(i)

    began, cpu = time.perf_counter(), time.thread_time()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return time.perf_counter() - began, (time.thread_time() - cpu) / count * 1e6


async def paced(count: int, rate: float, send: Callable[[int], Awaitable[object]]) -> float:
    """Start `send(i)` at `rate` per second, not waiting for each (sends confirm in the background);
    the rate achieved."""
    began = time.perf_counter()
    tasks = []
    for i in range(count):
        delay = began + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(i)))
    achieved = count / (time.perf_counter() - began)
    await asyncio.gather(*tasks)
    return achieved


class Counter:
    def __init__(self, target: int) -> None:
        self.target = target
        self.seen = 0
        self.first = 0.0
        self.latencies: list[float] = []
        self.cpu = 0.0
        self.done = asyncio.Event()

    def hit(self, sent_at: float) -> None:
        now = time.time()
        if self.seen == 0:
            self.first = time.perf_counter()
            self.cpu = time.thread_time()
        self.seen += 1
        self.latencies.append(now - sent_at)
        if self.seen >= self.target:
            self.cpu = time.thread_time() - self.cpu
            self.done.set()

    def cpu_us(self) -> float:
        """CPU time of the event loop's thread per message (less noisy than throughput on a shared box)."""
        return self.cpu / self.target * 1e6

    def latency(self, achieved_rate: float) -> Latency:
        q = statistics.quantiles(self.latencies, n=100)
        lat = Latency(q[49] * 1000, q[98] * 1000, achieved_rate, len(self.latencies))
        progress(f"  paced {achieved_rate:.0f}/s: p50 {lat.p50_ms:.1f} ms, p99 {lat.p99_ms:.1f} ms")
        return lat


@dataclass(frozen=True)
class Settings:
    url: str
    events: int
    keys: int
    in_flight: int
    rates: tuple[float, ...]
    seconds: float
    batching_rate: float
    batching_events: int
    phases: tuple[str, ...]
    max_workers: int = 1
    profile: Path | None = None
    profile_cpu: bool = False


@contextlib.contextmanager
def profiled(s: Settings, name: str) -> Iterator[None]:
    """cProfile of the loop's thread while the block runs, to `s.profile/name.prof` (nothing without it)."""
    if s.profile is None:
        yield
        return
    # The loop thread's CPU clock: a wall clock would count a native call's wait for the GIL as its cost.
    profiler = cProfile.Profile(time.thread_time) if s.profile_cpu else cProfile.Profile()
    profiler.enable()
    try:
        yield
    finally:
        profiler.disable()
        s.profile.mkdir(parents=True, exist_ok=True)
        profiler.dump_stats(s.profile / f"{name}.prof")


# --- raw pulsar-client ---------------------------------------------------------------------------


async def raw_side(s: Settings) -> Figures:
    client = pa.Client(s.url, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Warn))
    sem = asyncio.Semaphore(s.in_flight)
    figures = Figures()
    try:

        async def make(phase: str, options: ProducerOptions) -> tuple[Any, Any]:
            topic = fresh_topic("raw", phase)
            consumer = await client.subscribe(
                topic,
                SUBSCRIPTION,
                consumer_type=pulsar.ConsumerType.Shared,
                initial_position=InitialPosition.Earliest,
            )
            producer = await client.create_producer(topic, **options.as_kwargs())
            return consumer, producer

        def sender(producer: Any) -> Callable[[int], Awaitable[object]]:
            async def send(i: int) -> None:
                e = event(i, s.keys)
                async with sem:
                    await producer.send(orjson.dumps(e.model_dump()), partition_key=e.device_id)

            return send

        async def drain(consumer: Any, counter: Counter) -> None:
            while counter.seen < counter.target:
                msg = await consumer.receive()
                e = Event.model_validate_json(msg.data())
                await consumer.acknowledge(msg)
                counter.hit(e.sent_at)

        async def live(options: ProducerOptions, rate: float, n: int) -> Latency:
            consumer, producer = await make("latency", options)
            counter = Counter(n)
            drainer = asyncio.create_task(drain(consumer, counter))
            achieved = await paced(n, rate, sender(producer))
            await drainer
            await producer.close()
            await consumer.close()
            return counter.latency(achieved)

        if "publish" in s.phases or "consume" in s.phases:
            consumer, producer = await make("throughput", ProducerOptions())
            # As on the broker side: the subscription exists while the backlog is written, but no consumer
            # takes messages meanwhile; the drain subscribes afresh.
            topic = consumer.topic()
            await consumer.close()
            with profiled(s, "raw-publish"):
                seconds, figures.publish_cpu_us = await pooled(s.events, s.in_flight, sender(producer))
            figures.publish_per_s = s.events / seconds
            await producer.close()
            if "consume" in s.phases:
                consumer = await client.subscribe(
                    topic, SUBSCRIPTION, consumer_type=pulsar.ConsumerType.Shared
                )
                counter = Counter(s.events)
                with profiled(s, "raw-consume"):
                    await drain(consumer, counter)
                figures.consume_per_s = s.events / (time.perf_counter() - counter.first)
                figures.consume_cpu_us = counter.cpu_us()
                await consumer.close()
        if "latency" in s.phases:
            figures.latency = {
                f"{rate:.0f}/s": await live(ProducerOptions(), rate, int(rate * s.seconds))
                for rate in s.rates
            }
        if "batching" in s.phases:
            figures.batching = {
                name: await live(options, s.batching_rate, s.batching_events)
                for name, options in BATCHING.items()
            }
    finally:
        await client.close()
    return figures


# --- PulsarBroker --------------------------------------------------------------------------------


async def broker_side(s: Settings) -> Figures:
    figures = Figures()

    async def consume(topic: str, counter: Counter) -> PulsarBroker:
        # Per-message access logs off (logger=None) as a production service at volume would configure.
        consumer = PulsarBroker(s.url, logger=None)

        @consumer.subscriber(
            topic,
            subscription=SUBSCRIPTION,
            initial_position=InitialPosition.Earliest,
            max_workers=s.max_workers,
        )
        async def on_event(e: Event) -> None:
            counter.hit(e.sent_at)

        await consumer.start()
        return consumer

    def sender(publisher: PulsarBroker, topic: str) -> Callable[[int], Awaitable[object]]:
        async def send(i: int) -> None:
            e = event(i, s.keys)
            await publisher.publish(e, topic, key=e.device_id)

        return send

    async def create_subscription(topic: str) -> None:
        # The subscription must exist before the backlog is written, as on the raw side.
        probe = PulsarBroker(s.url, logger=None)
        probe.subscriber(topic, subscription=SUBSCRIPTION, initial_position=InitialPosition.Earliest)
        await probe.connect()
        for sub in probe.subscribers:
            await sub.get_one(timeout=0.01)
        await probe.stop()

    async def live(options: ProducerOptions, rate: float, n: int) -> Latency:
        publisher = PulsarBroker(s.url, logger=None, producer_options=options)
        await publisher.start()
        try:
            topic = fresh_topic("broker", "latency")
            counter = Counter(n)
            consumer = await consume(topic, counter)
            achieved = await paced(n, rate, sender(publisher, topic))
            await counter.done.wait()
            await consumer.stop()
        finally:
            await publisher.stop()
        return counter.latency(achieved)

    if "publish" in s.phases or "consume" in s.phases:
        publisher = PulsarBroker(
            s.url, logger=None, producer_options=ProducerOptions(max_pending_messages=s.in_flight)
        )
        await publisher.start()
        try:
            topic = fresh_topic("broker", "throughput")
            await create_subscription(topic)
            with profiled(s, "broker-publish"):
                seconds, figures.publish_cpu_us = await pooled(
                    s.events, s.in_flight, sender(publisher, topic)
                )
            figures.publish_per_s = s.events / seconds
        finally:
            await publisher.stop()
        if "consume" in s.phases:
            counter = Counter(s.events)
            with profiled(s, "broker-consume"):
                consumer = await consume(topic, counter)
                await counter.done.wait()
            figures.consume_per_s = s.events / (time.perf_counter() - counter.first)
            figures.consume_cpu_us = counter.cpu_us()
            await consumer.stop()
    if "latency" in s.phases:
        figures.latency = {
            f"{rate:.0f}/s": await live(ProducerOptions(), rate, int(rate * s.seconds)) for rate in s.rates
        }
    if "batching" in s.phases:
        figures.batching = {
            name: await live(options, s.batching_rate, s.batching_events)
            for name, options in BATCHING.items()
        }
    return figures


def ratio(broker: float | None, raw: float | None) -> float | None:
    return broker / raw if broker is not None and raw else None


def report(raw: Figures, broker: Figures, s: Settings) -> dict[str, Any]:
    ratios = {
        "publish": ratio(broker.publish_per_s, raw.publish_per_s),
        "consume": ratio(broker.consume_per_s, raw.consume_per_s),
    }
    if raw.publish_per_s is not None:
        print(f"{'':10}{'publish/s':>12}{'consume/s':>12}{'publish CPU':>14}{'consume CPU':>14}")
        for name, f in (("raw", raw), ("broker", broker)):
            print(
                f"{name:10}{f.publish_per_s or 0:12.0f}{f.consume_per_s or 0:12.0f}"
                f"{f.publish_cpu_us or 0:11.1f} us{f.consume_cpu_us or 0:11.1f} us"
            )
        print(f"{'ratio':10}{ratios['publish'] or 0:12.0%}{ratios['consume'] or 0:12.0%}")
    rows: list[tuple[str, str, Latency]] = []
    for side, f in (("raw", raw), ("broker", broker)):
        for rate, lat in (f.latency or {}).items():
            rows.append((side, f"paced {rate}, default options", lat))
        for name, lat in (f.batching or {}).items():
            rows.append((side, f"paced {s.batching_rate:.0f}/s, {name}", lat))
    if rows:
        print(f"\n{'':8}{'run':42}{'rate/s':>9}{'p50 ms':>9}{'p99 ms':>9}")
        for side, what, lat in rows:
            print(f"{side:8}{what:42}{lat.rate_per_s:9.0f}{lat.p50_ms:9.1f}{lat.p99_ms:9.1f}")
    return {
        "settings": {k: v for k, v in asdict(s).items() if k not in ("url", "profile", "profile_cpu")},
        "raw": asdict(raw),
        "broker": asdict(broker),
        "ratio": ratios,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--url", default=os.environ.get("FLEET_PULSAR_URL", "pulsar://127.0.0.1:6650"))
    parser.add_argument("--keys", type=int, default=1000, help="distinct device ids (partition keys)")
    parser.add_argument("--in-flight", type=int, default=1000, help="confirmed sends outstanding")
    parser.add_argument("--rates", default="2000,5000", help="events/s in the latency phase, comma-separated")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the latency phase")
    parser.add_argument("--batching-rate", type=float, default=2000.0, help="events/s, batching phase")
    parser.add_argument("--batching-seconds", type=float, default=5.0, help="per setting and side")
    parser.add_argument("--max-workers", type=int, default=1, help="broker handlers at once (key-ordered)")
    parser.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated subset of {PHASES}")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--profile", type=Path, help="write cProfile stats of each phase to this directory")
    parser.add_argument(
        "--profile-cpu", action="store_true", help="profile the loop thread's CPU time, not wall time"
    )
    args = parser.parse_args()

    phases = tuple(p for p in args.phases.split(",") if p)
    if unknown := set(phases) - set(PHASES):
        parser.error(f"unknown phases: {sorted(unknown)}")
    settings = Settings(
        url=args.url,
        events=args.events,
        keys=args.keys,
        in_flight=args.in_flight,
        rates=tuple(float(r) for r in args.rates.split(",") if r),
        seconds=args.seconds,
        batching_rate=args.batching_rate,
        batching_events=int(args.batching_rate * args.batching_seconds),
        phases=phases,
        max_workers=args.max_workers,
        profile=args.profile,
        profile_cpu=args.profile_cpu,
    )
    # Which bus ran (another commit's environment can run this file) and how loaded the machine was.
    bus = fleet_shared.pulsar.__file__
    load_before = os.getloadavg()
    raw = await raw_side(settings)
    broker = await broker_side(settings)
    load_after = os.getloadavg()
    result = report(raw, broker, settings)
    result["bus_module"] = bus
    result["load_average"] = {"before": load_before, "after": load_after}
    print(f"bus: {bus}")
    print(f"load average (1, 5, 15 min): before {load_before}, after {load_after}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {args.output}")


if __name__ == "__main__":
    asyncio.run(main())
