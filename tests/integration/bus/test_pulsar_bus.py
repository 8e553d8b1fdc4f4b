"""PulsarBroker against a real Apache Pulsar: delivery, ordering, redelivery, dead letters, tracing."""

from __future__ import annotations

import asyncio
import base64
import signal
import sys
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import orjson
import pytest
from faststream import Context
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import BaseModel

from fleet_contracts.deadletter import MessageDeadLetteredEvent
from fleet_shared.pulsar import (
    DLQ_ERROR,
    DLQ_ERROR_TYPE,
    DLQ_ORIGINAL_MESSAGE_ID,
    DLQ_ORIGINAL_TOPIC,
    DLQ_REDELIVERY_COUNT,
    ConsumerType,
    DeadLetter,
    InitialPosition,
    ProducerOptions,
    PulsarBroker,
    PulsarMessage,
    PulsarResponse,
)
from fleet_shared.pulsar.opentelemetry import PulsarTelemetryMiddleware
from tests.support import needs_private_stack

pytestmark = pytest.mark.integration

Msg = Annotated[PulsarMessage, Context("message")]
EARLIEST = InitialPosition.Earliest


class Reading(BaseModel):
    device_id: str
    seq: int


def topic_name(unique: str, name: str) -> str:
    return f"persistent://public/default/bus-{name}-{unique}"


@asynccontextmanager
async def running(*brokers: PulsarBroker) -> AsyncIterator[None]:
    started: list[PulsarBroker] = []
    try:
        for b in brokers:
            await b.start()
            started.append(b)
        yield
    finally:
        for b in reversed(started):
            await b.stop()


async def until(predicate: Callable[[], bool], within: float = 20.0) -> None:
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 - polling state filled by handlers in other tasks
            await asyncio.sleep(0.02)


async def test_round_trip_keeps_key_properties_and_event_time(stack: Any, unique: str) -> None:
    topic = topic_name(unique, "roundtrip")
    broker = PulsarBroker(stack.pulsar_url)
    got: list[tuple[Reading, PulsarMessage]] = []

    @broker.subscriber(topic, subscription="s", initial_position=EARLIEST)
    async def on_reading(reading: Reading, message: Msg) -> None:
        got.append((reading, message))

    event_time = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    async with running(broker):
        msg_id = await broker.publish(
            Reading(device_id="dev-1", seq=1),
            topic,
            key="dev-1",
            headers={"tenant": "acme", "region": "eu"},
            event_time=event_time,
            correlation_id="corr-1",
        )
        await until(lambda: len(got) == 1)

    reading, message = got[0]
    assert reading == Reading(device_id="dev-1", seq=1)
    assert message.raw_message.partition_key() == "dev-1"
    assert message.headers["tenant"] == "acme"
    assert message.headers["region"] == "eu"
    assert message.correlation_id == "corr-1"
    assert message.content_type == "application/json"
    assert message.raw_message.event_timestamp() == int(event_time.timestamp() * 1000)
    assert message.message_id == str(msg_id)


async def test_get_one_times_out_without_losing_messages(stack: Any, unique: str) -> None:
    topic = topic_name(unique, "getone")
    broker = PulsarBroker(stack.pulsar_url)
    sub = broker.subscriber(topic, subscription="pull", initial_position=EARLIEST)

    async with running(broker):
        assert await sub.get_one(timeout=0.3) is None  # nothing yet; the receive stays pending
        for n in range(3):
            await broker.publish({"n": n}, topic)
        received = []
        for _ in range(3):
            msg = await sub.get_one(timeout=10)
            assert msg is not None
            received.append(await msg.decode())
            await msg.ack()
        assert await sub.get_one(timeout=0.3) is None

    assert received == [{"n": 0}, {"n": 1}, {"n": 2}]


async def test_key_shared_keeps_per_key_order_across_four_consumers(stack: Any, unique: str) -> None:
    topic = topic_name(unique, "keyshared")
    keys = [f"dev-{i}" for i in range(100)]
    per_key = 10
    seen: dict[str, list[int]] = defaultdict(list)
    by_consumer: dict[int, set[str]] = defaultdict(set)
    brokers = [PulsarBroker(stack.pulsar_url) for _ in range(4)]

    def subscribe(broker: PulsarBroker, index: int) -> None:
        @broker.subscriber(
            topic,
            subscription="status",
            subscription_type=ConsumerType.KeyShared,
            initial_position=EARLIEST,
            max_workers=8,
        )
        async def on_reading(reading: Reading) -> None:
            await asyncio.sleep(0.001 * (reading.seq % 3))  # uneven handler times tempt reordering
            seen[reading.device_id].append(reading.seq)
            by_consumer[index].add(reading.device_id)

    for index, b in enumerate(brokers):
        subscribe(b, index)

    publisher = PulsarBroker(stack.pulsar_url)
    async with running(*brokers, publisher):
        sends = [
            publisher.publish(Reading(device_id=k, seq=seq), topic, key=k)
            for seq in range(per_key)
            for k in keys
        ]
        await asyncio.gather(*sends)  # concurrent sends; per-key order is the producer's send order
        await until(lambda: sum(len(v) for v in seen.values()) >= len(keys) * per_key, within=60)

    assert all(seen[k] == list(range(per_key)) for k in keys), "a key was handled out of order"
    assert len([i for i in by_consumer if by_consumer[i]]) > 1, "KeyShared spread no keys"
    owners = defaultdict(set)
    for i, ks in by_consumer.items():
        for k in ks:
            owners[k].add(i)
    assert all(len(o) == 1 for o in owners.values()), "a key was handled by two consumers"


async def test_failure_is_redelivered_then_dead_lettered_with_the_error(stack: Any, unique: str) -> None:
    topic = topic_name(unique, "dlq")
    dlq = f"{topic}-status-DLQ"
    broker = PulsarBroker(stack.pulsar_url)
    attempts: list[int] = []
    dead: list[tuple[dict[str, Any], dict[str, str], str]] = []

    @broker.subscriber(
        topic,
        subscription="status",
        initial_position=EARLIEST,
        negative_ack_redelivery_delay=0.1,
        dead_letter=DeadLetter(max_redeliveries=2),
    )
    async def always_fails(reading: Reading, message: Msg) -> None:
        attempts.append(message.redelivery_count)
        raise RuntimeError(f"shadow write failed for {reading.device_id}")

    @broker.subscriber(dlq, subscription="ops", initial_position=EARLIEST)
    async def on_dead(body: dict[str, Any], message: Msg) -> None:
        dead.append((body, message.headers, message.key))

    async with running(broker):
        msg_id = await broker.publish(Reading(device_id="dev-7", seq=1), topic, key="dev-7")
        await until(lambda: len(dead) == 1)
        await asyncio.sleep(0.5)  # the original must not come back once dead-lettered

    assert attempts == [0, 1, 2]
    body, props, key = dead[0]
    # The contract event (fleet_contracts.deadletter), keyed by the original message id, the original inside.
    event = MessageDeadLetteredEvent.model_validate(body)
    assert orjson.loads(base64.b64decode(event.data.payload_base64)) == {"device_id": "dev-7", "seq": 1}
    assert key == event.data.message_id == str(msg_id)
    assert (event.data.key, event.data.redelivery_count) == ("dev-7", 2)
    assert event.data.error_type == "RuntimeError"
    assert props["REAL_TOPIC"] == topic
    assert props[DLQ_ERROR] == "shadow write failed for dev-7"
    assert props[DLQ_ERROR_TYPE] == "RuntimeError"
    assert props[DLQ_ORIGINAL_TOPIC] == topic
    assert props[DLQ_ORIGINAL_MESSAGE_ID] == str(msg_id)
    assert props[DLQ_REDELIVERY_COUNT] == "2"
    assert len(dead) == 1


async def test_unacked_messages_of_a_closed_consumer_go_to_the_survivor(stack: Any, unique: str) -> None:
    topic = topic_name(unique, "closed")
    doomed = PulsarBroker(stack.pulsar_url, graceful_timeout=0.2)
    survivor = PulsarBroker(stack.pulsar_url)
    held: list[int] = []
    handled: set[int] = set()
    release = asyncio.Event()

    @doomed.subscriber(topic, subscription="s", initial_position=EARLIEST, receiver_queue_size=5)
    async def stuck(body: dict[str, int]) -> None:
        held.append(body["n"])
        await release.wait()

    publisher = PulsarBroker(stack.pulsar_url)
    async with running(publisher):
        await doomed.start()
        try:
            for n in range(20):
                await publisher.publish({"n": n}, topic)
            await until(lambda: bool(held))
        finally:
            await doomed.stop()  # the handler outlives graceful_timeout: its message stays unacked

        @survivor.subscriber(topic, subscription="s", initial_position=EARLIEST)
        async def fine(body: dict[str, int]) -> None:
            handled.add(body["n"])

        async with running(survivor):
            await until(lambda: len(handled) == 20)

    release.set()
    assert held[0] in handled
    assert handled == set(range(20))


async def test_sigkilled_consumer_process_messages_are_redelivered(stack: Any, unique: str) -> None:
    topic = topic_name(unique, "sigkill")
    script = Path(__file__).with_name("killed_consumer.py")
    child = await asyncio.create_subprocess_exec(
        sys.executable, str(script), stack.pulsar_url, topic, "s", stdout=asyncio.subprocess.PIPE
    )
    assert child.stdout is not None
    child_got: list[int] = []
    handled: set[int] = set()
    survivor = PulsarBroker(stack.pulsar_url)

    @survivor.subscriber(topic, subscription="s", initial_position=EARLIEST)
    async def fine(body: dict[str, int]) -> None:
        handled.add(body["n"])

    try:
        async with asyncio.timeout(30):
            await read_line_starting(child.stdout, b"ready")
        async with running(survivor):
            for n in range(30):
                await survivor.publish({"n": n}, topic)
            async with asyncio.timeout(20):
                line = await read_line_starting(child.stdout, b"got ")
            child_got.append(int(line.split()[1]))
            child.send_signal(signal.SIGKILL)
            await child.wait()
            await until(lambda: len(handled) == 30, within=30)
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()

    assert child_got[0] in handled
    assert handled == set(range(30))


async def read_line_starting(stream: asyncio.StreamReader, prefix: bytes) -> bytes:
    """The child's protocol lines, skipping the log lines interleaved with them."""
    while not (line := await stream.readline()).startswith(prefix):
        if not line:
            raise EOFError("the consumer process exited")
    return line


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


async def test_trace_spans_link_across_two_services(stack: Any, unique: str) -> None:
    first, second = topic_name(unique, "trace-in"), topic_name(unique, "trace-out")
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    ingest = PulsarBroker(stack.pulsar_url, middlewares=[PulsarTelemetryMiddleware(tracer_provider=provider)])
    status = PulsarBroker(stack.pulsar_url, middlewares=[PulsarTelemetryMiddleware(tracer_provider=provider)])
    done = asyncio.Event()
    traceparents: list[str] = []

    @ingest.subscriber(first, subscription="ingest", initial_position=EARLIEST)
    @ingest.publisher(second)
    async def relay(reading: Reading) -> PulsarResponse:
        return PulsarResponse(reading, key=reading.device_id)

    @status.subscriber(second, subscription="status", initial_position=EARLIEST)
    async def apply(reading: Reading, message: Msg) -> None:
        traceparents.append(message.headers["traceparent"])
        done.set()

    async with running(ingest, status):
        await ingest.publish(Reading(device_id="dev-1", seq=1), first, key="dev-1")
        await asyncio.wait_for(done.wait(), 20)
        await asyncio.sleep(0.2)  # let the last spans end

    # span names per OpenTelemetry's messaging conventions: `{operation} {topic}`
    spans = {s.name.replace("persistent://public/default/", ""): s for s in exporter.get_finished_spans()}
    send_in = spans[f"send bus-trace-in-{unique}"]
    process_in = spans[f"process bus-trace-in-{unique}"]
    send_out = spans[f"send bus-trace-out-{unique}"]
    process_out = spans[f"process bus-trace-out-{unique}"]

    assert len({s.context.trace_id for s in spans.values()}) == 1, "one trace across both services"
    assert parent_of(send_in) is None  # published outside any handler: the send span starts the trace
    assert parent_of(process_in) == send_in.context.span_id
    # The republish happens inside the first consumer's span...
    assert parent_of(send_out) == process_in.context.span_id
    # ...and its message carries its own send span, under which the second consumer processes it.
    assert parent_of(process_out) == send_out.context.span_id
    _, trace_id, parent_id, _ = traceparents[0].split("-")
    assert trace_id == format(send_out.context.trace_id, "032x")
    assert parent_id == format(send_out.context.span_id, "016x")
    assert (process_out.attributes or {})["messaging.consumer.group.name"] == "status"
    assert (process_out.attributes or {})["messaging.message.id"]
    assert (send_out.attributes or {})["messaging.message.id"]


async def test_request_reply(stack: Any, unique: str) -> None:
    topic = topic_name(unique, "rpc")
    server = PulsarBroker(stack.pulsar_url)
    client = PulsarBroker(stack.pulsar_url)

    @server.subscriber(topic, subscription="rpc", initial_position=EARLIEST)
    async def double(body: dict[str, int]) -> dict[str, int]:
        return {"value": body["value"] * 2}

    async with running(server, client):
        reply = await client.request({"value": 21}, topic, timeout=10)

    assert await reply.decode() == {"value": 42}


async def test_pattern_subscription(stack: Any, unique: str) -> None:
    broker = PulsarBroker(stack.pulsar_url)
    seen: set[str] = set()
    names = [topic_name(unique, f"pat-{i}") for i in range(2)]
    for name in names:  # the topics exist before the subscription discovers them
        await_publish = PulsarBroker(stack.pulsar_url)
        async with running(await_publish):
            await await_publish.publish({"warmup": True}, name)

    @broker.subscriber(
        pattern=f"persistent://public/default/bus-pat-.*-{unique}",
        subscription="p",
        initial_position=EARLIEST,
    )
    async def on_any(body: dict[str, Any], message: Msg) -> None:
        seen.add(message.topic)

    async with running(broker):
        await until(lambda: len(seen) == 2)

    assert seen == set(names)


@needs_private_stack
async def test_producers_and_consumers_survive_a_broker_restart(unique: str) -> None:
    """Sends keep being made while Pulsar is down and after it is back; nothing is lost, and messages
    come at least once (a delivery not acknowledged before the restart may come twice)."""
    from fleet_devstack.stack import LocalStack

    local = LocalStack.from_env()
    topic = topic_name(unique, "restart")
    # Sends made as Pulsar goes down wait in the client's queue until it is back: a restart took 31 s on a
    # loaded two-core machine, past the default 30 s send timeout, so the test gives its sends 120 s.
    broker = PulsarBroker(local.config.pulsar_url, producer_options=ProducerOptions(send_timeout_ms=120_000))
    deliveries: list[tuple[int, str]] = []

    def payload(n: int) -> str:
        return f"reading-{n}-" + "x" * (n % 17)

    @broker.subscriber(topic, subscription="s", initial_position=EARLIEST, negative_ack_redelivery_delay=0.2)
    async def collect(body: dict[str, Any]) -> None:
        deliveries.append((body["n"], body["payload"]))

    async def send(n: int) -> int:
        await broker.publish({"n": n, "payload": payload(n)}, topic, key=f"dev-{n % 7}")
        return n

    before = 100
    async with running(broker):
        for n in range(before):
            await send(n)
        await until(lambda: len({n for n, _ in deliveries}) == before, within=30)

        restart = asyncio.create_task(asyncio.to_thread(local.restart_pulsar))
        # Keep sending every 20 ms while Pulsar stops, is down and comes back, then 100 more: those
        # made during the outage wait in the client's queue (send timeout 120 s) and go out on reconnect.
        sends: list[asyncio.Task[int]] = []
        n, after_restart = before, 0
        while after_restart < 100:
            sends.append(asyncio.create_task(send(n)))
            n += 1
            after_restart += restart.done()
            await asyncio.sleep(0.02)
        await restart
        sent = list(range(before)) + await asyncio.gather(*sends)  # every send was confirmed
        await until(lambda: len({n for n, _ in deliveries}) >= len(sent), within=120)
        await asyncio.sleep(1)  # let late redeliveries in, so the duplicate count below is complete
        assert await broker.ping(5), "the producer reconnected"

    received = {n for n, _ in deliveries}
    assert received == set(sent), f"lost: {sorted(set(sent) - received)[:20]}"
    assert all(p == payload(n) for n, p in deliveries), "a message came back with other content"
    # At least once: deliveries unacknowledged at the restart (acks are grouped for up to 100 ms) come
    # again once, nothing comes three times.
    assert max(Counter(n for n, _ in deliveries).values()) <= 2
