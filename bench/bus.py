"""Bus benchmark: PulsarBroker against raw pulsar-client (asyncio API), same topic settings, same run.

    uv run python bench/bus.py [--events N] [--url pulsar://127.0.0.1:6650]

Three phases per side, each on a fresh topic:
  publish  N keyed events with up to `--in-flight` confirmed sends outstanding (KeyBased batching);
  consume  the N-event backlog (receive, pydantic-validate, ack), one message at a time;
  latency  a live run paced at `--rate` events/s; end-to-end = handler time - send time in the body.
Both sides validate bodies with the same pydantic model, so the ratio is the broker's own overhead.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
import pulsar
from pulsar import asyncio as pa
from pydantic import BaseModel

from fleet_shared.pulsar import InitialPosition, ProducerOptions, PulsarBroker

RESULTS = Path(__file__).with_name("results") / "bus.json"
SUBSCRIPTION = "bench"


class Event(BaseModel):
    device_id: str
    seq: int
    sent_at: float


@dataclass
class Figures:
    publish_per_s: float
    consume_per_s: float
    latency_p50_ms: float
    latency_p99_ms: float


def event(seq: int, keys: int) -> Event:
    return Event(device_id=f"dev-{seq % keys}", seq=seq, sent_at=time.time())


def fresh_topic(side: str, phase: str) -> str:
    return f"persistent://public/default/bench-bus-{side}-{phase}-{uuid.uuid4().hex[:8]}"


async def pooled(count: int, workers: int, send: Callable[[int], Awaitable[object]]) -> float:
    """Run `send(i)` for i in range(count) on `workers` tasks; seconds taken."""
    it = iter(range(count))

    async def worker() -> None:
        for i in it:
            await send(i)

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return time.perf_counter() - began


async def paced(count: int, rate: float, send: Callable[[int], Awaitable[object]]) -> None:
    """Start `send(i)` at `rate` per second, not waiting for each (sends confirm in the background)."""
    began = time.perf_counter()
    tasks = []
    for i in range(count):
        delay = began + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(i)))
    await asyncio.gather(*tasks)


def percentiles(latencies: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(latencies, n=100)
    return q[49] * 1000, q[98] * 1000


class Counter:
    def __init__(self, target: int) -> None:
        self.target = target
        self.seen = 0
        self.first = 0.0
        self.latencies: list[float] = []
        self.done = asyncio.Event()

    def hit(self, sent_at: float) -> None:
        now = time.time()
        if self.seen == 0:
            self.first = time.perf_counter()
        self.seen += 1
        self.latencies.append(now - sent_at)
        if self.seen >= self.target:
            self.done.set()


# --- raw pulsar-client ---------------------------------------------------------------------------


async def raw_side(url: str, n: int, keys: int, in_flight: int, rate: float, latency_n: int) -> Figures:
    client = pa.Client(url, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Warn))
    options = ProducerOptions()
    sem = asyncio.Semaphore(in_flight)
    try:

        async def make(phase: str) -> tuple[str, Any, Any]:
            topic = fresh_topic("raw", phase)
            consumer = await client.subscribe(
                topic,
                SUBSCRIPTION,
                consumer_type=pulsar.ConsumerType.Shared,
                initial_position=InitialPosition.Earliest,
            )
            producer = await client.create_producer(topic, **options.as_kwargs())
            return topic, consumer, producer

        def sender(producer: Any) -> Callable[[int], Awaitable[object]]:
            async def send(i: int) -> None:
                e = event(i, keys)
                async with sem:
                    await producer.send(orjson.dumps(e.model_dump()), partition_key=e.device_id)

            return send

        async def drain(consumer: Any, counter: Counter) -> None:
            while counter.seen < counter.target:
                msg = await consumer.receive()
                e = Event.model_validate_json(msg.data())
                await consumer.acknowledge(msg)
                counter.hit(e.sent_at)

        _, consumer, producer = await make("throughput")
        publish_s = await pooled(n, in_flight, sender(producer))
        counter = Counter(n)
        await drain(consumer, counter)
        consume_s = time.perf_counter() - counter.first
        await producer.close()
        await consumer.close()

        _, consumer, producer = await make("latency")
        live = Counter(latency_n)
        drainer = asyncio.create_task(drain(consumer, live))
        await paced(latency_n, rate, sender(producer))
        await drainer
        await producer.close()
        await consumer.close()
    finally:
        await client.close()
    p50, p99 = percentiles(live.latencies)
    return Figures(n / publish_s, n / consume_s, p50, p99)


# --- PulsarBroker --------------------------------------------------------------------------------


async def broker_side(
    url: str, n: int, keys: int, in_flight: int, rate: float, latency_n: int, max_workers: int = 1
) -> Figures:
    # Per-message access logs off (logger=None) as a production service at volume would configure.
    options = ProducerOptions(max_pending_messages=in_flight)
    publisher = PulsarBroker(url, logger=None, producer_options=options)
    await publisher.start()
    try:

        async def consume(topic: str, counter: Counter) -> PulsarBroker:
            consumer = PulsarBroker(url, logger=None)

            @consumer.subscriber(
                topic,
                subscription=SUBSCRIPTION,
                initial_position=InitialPosition.Earliest,
                max_workers=max_workers,
            )
            async def on_event(e: Event) -> None:
                counter.hit(e.sent_at)

            await consumer.start()
            return consumer

        def sender(topic: str) -> Callable[[int], Awaitable[object]]:
            async def send(i: int) -> None:
                e = event(i, keys)
                await publisher.publish(e, topic, key=e.device_id)

            return send

        async def create_subscription(topic: str) -> None:
            # The subscription must exist before the backlog is written, as on the raw side.
            probe = PulsarBroker(url, logger=None)
            probe.subscriber(topic, subscription=SUBSCRIPTION, initial_position=InitialPosition.Earliest)
            await probe.connect()
            for sub in probe.subscribers:
                await sub.get_one(timeout=0.01)
            await probe.stop()

        topic = fresh_topic("broker", "throughput")
        await create_subscription(topic)
        publish_s = await pooled(n, in_flight, sender(topic))
        counter = Counter(n)
        consumer = await consume(topic, counter)
        await counter.done.wait()
        consume_s = time.perf_counter() - counter.first
        await consumer.stop()

        topic = fresh_topic("broker", "latency")
        live = Counter(latency_n)
        consumer = await consume(topic, live)
        await paced(latency_n, rate, sender(topic))
        await live.done.wait()
        await consumer.stop()
    finally:
        await publisher.stop()
    p50, p99 = percentiles(live.latencies)
    return Figures(n / publish_s, n / consume_s, p50, p99)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--url", default=os.environ.get("FLEET_PULSAR_URL", "pulsar://127.0.0.1:6650"))
    parser.add_argument("--keys", type=int, default=1000, help="distinct device ids (partition keys)")
    parser.add_argument("--in-flight", type=int, default=1000, help="confirmed sends outstanding")
    parser.add_argument("--rate", type=float, default=2000.0, help="events/s in the latency phase")
    parser.add_argument("--latency-events", type=int, default=10_000)
    parser.add_argument("--max-workers", type=int, default=1, help="broker handlers at once (key-ordered)")
    args = parser.parse_args()

    latency_n = min(args.latency_events, args.events)
    common = (args.url, args.events, args.keys, args.in_flight, args.rate, latency_n)
    raw = await raw_side(*common)
    broker = await broker_side(*common, max_workers=args.max_workers)
    ratio = {
        "publish": broker.publish_per_s / raw.publish_per_s,
        "consume": broker.consume_per_s / raw.consume_per_s,
    }
    result = {
        "events": args.events,
        "keys": args.keys,
        "in_flight": args.in_flight,
        "broker_max_workers": args.max_workers,
        "latency_rate_per_s": args.rate,
        "latency_events": common[-1],
        "batching": "KeyBased, 1000 msgs / 128 KiB / 10 ms",
        "raw": asdict(raw),
        "broker": asdict(broker),
        "ratio": ratio,
    }
    print(f"{'':10}{'publish/s':>12}{'consume/s':>12}{'p50 ms':>10}{'p99 ms':>10}")
    for name, f in (("raw", raw), ("broker", broker)):
        rates = f"{f.publish_per_s:12.0f}{f.consume_per_s:12.0f}"
        print(f"{name:10}{rates}{f.latency_p50_ms:10.2f}{f.latency_p99_ms:10.2f}")
    print(f"{'ratio':10}{ratio['publish']:12.0%}{ratio['consume']:12.0%}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    asyncio.run(main())
