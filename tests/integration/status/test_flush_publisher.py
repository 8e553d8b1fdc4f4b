"""The outbox relay's publisher against a real Apache Pulsar: a flush's events, on two topics, arrive each in
its device's outbox order with its event id, more of them than the sends it lets be outstanding; in a traced
flush one publish span covers them and every event carries its context."""

from __future__ import annotations

import asyncio
from typing import Any

import pulsar
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from pulsar import asyncio as pa

from fleet_contracts.outbox import EVENT_ID_PROPERTY, OutboxEntry
from fleet_shared.pulsar import ConsumerType, ProducerOptions, PulsarBroker
from fleet_status.adapters.publisher import PUBLISH_SPAN, FlushPublisher

pytestmark = pytest.mark.integration


def entries(topics: tuple[str, str], devices: int, per_device: int, tag: str) -> list[OutboxEntry]:
    """Each device's events in its outbox order, alternating topics; ids say device, rank and tag."""
    out = []
    for n in range(per_device):
        for d in range(devices):
            body = f'{{"device": "d{d}", "n": {n}}}'.encode()
            out.append(OutboxEntry(f"{tag}-d{d}-{n}", topics[n % 2], f"d{d}", body))
    return out


async def read(consumer: pa.Consumer, count: int) -> list[pulsar.Message]:
    out = []
    async with asyncio.timeout(60):
        for _ in range(count):
            out.append(await consumer.receive())
    return out


async def test_a_flushs_events_arrive_in_outbox_order_per_device_with_their_ids(
    stack: Any, unique: str
) -> None:
    topics = (
        f"persistent://public/default/shadow-{unique}",
        f"persistent://public/default/presence-{unique}",
    )
    broker = PulsarBroker(stack.pulsar_url, telemetry=False)
    client = await broker.connect()
    consumers = [await client.subscribe(t, "check", consumer_type=ConsumerType.Exclusive) for t in topics]
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    # fewer sends in flight than one flush makes, and a client queue that holds no more: two flushes at
    # once must share the bound (else the client refuses sends: ProducerQueueIsFull)
    options = ProducerOptions(max_pending_messages=50)
    publisher = FlushPublisher(broker, options=options, max_in_flight=50, tracer=tracer)
    try:
        untraced = entries(topics, devices=40, per_device=4, tag="a")
        traced = entries(topics, devices=40, per_device=2, tag="b")
        flush_span: list[Any] = []

        async def traced_flush() -> None:
            with tracer.start_as_current_span("status flush") as flush:
                flush_span.append(flush)
                await publisher.publish(traced)

        # two flushes at once (the writer pipelines them): senders made once, confirmations shared
        await asyncio.gather(traced_flush(), publisher.publish(untraced))
        await publisher.publish([])
        flush = flush_span[0]

        got = [m for c in consumers for m in await read(c, (len(traced) + len(untraced)) // 2)]
        by_id = {m.properties()[EVENT_ID_PROPERTY]: m for m in got}
        assert set(by_id) == {e.id for e in traced + untraced}
        for e in traced + untraced:
            message = by_id[e.id]
            assert message.data() == e.body
            assert message.partition_key() == e.key
            assert str(message.topic_name()) == e.topic
        # each device's events of one flush on each topic in outbox order
        for consumer_got in (got[: len(got) // 2], got[len(got) // 2 :]):
            per_flush_and_device: dict[str, list[int]] = {}
            for m in consumer_got:
                flush_device, n = m.properties()[EVENT_ID_PROPERTY].rsplit("-", 1)
                per_flush_and_device.setdefault(flush_device, []).append(int(n))
            assert len(per_flush_and_device) == 80
            for ranks in per_flush_and_device.values():
                assert ranks == sorted(ranks), ranks

        (span,) = [s for s in exporter.get_finished_spans() if s.name != "status flush"]
        assert span.name == PUBLISH_SPAN
        assert span.kind is SpanKind.PRODUCER
        assert span.parent is not None
        assert span.parent.span_id == flush.get_span_context().span_id
        assert (span.attributes or {})["messaging.batch.message_count"] == len(traced)
        context = span.get_span_context()
        expected = f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"
        assert context.trace_flags.sampled
        assert {by_id[e.id].properties().get("traceparent") for e in traced} == {expected}
        assert all("traceparent" not in by_id[e.id].properties() for e in untraced)  # no span, no context
    finally:
        for consumer in consumers:
            await consumer.close()
        await broker.stop()
