"""status's device subscription received in batches: a span only where a trace is recorded (a sampled
`traceparent`: its own consume span; none: one root span per batch; an unsampled one: no span), handlers in
arrival order, and a message nacked past its redeliveries dead-lettered."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import pulsar
import pytest
from faststream import Context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased
from prometheus_client import CollectorRegistry
from pulsar.asyncio import PulsarException

from fleet_contracts import topics
from fleet_contracts.device import (
    DeviceEvent,
    DeviceStatusReported,
    DeviceStatusReportedEvent,
    DpReport,
    TuyaOrigin,
)
from fleet_shared.pulsar import DeviceSubscription, PulsarBroker, PulsarMessage, TestPulsarBroker
from fleet_shared.pulsar.device_batches import DeviceEventBatches, DeviceMessage
from fleet_shared.pulsar.testing import FakeMessage, InMemoryConsumer
from fleet_shared.tracing import DEVICE_ID
from fleet_shared.tracing.provider import ServiceTracerProvider

pytestmark = pytest.mark.unit

TRACE = "0af7651916cd43dd8448eb211c80319c"


def report(device: str) -> bytes:
    event = DeviceStatusReportedEvent.build(
        DeviceStatusReported(
            device_id=device,
            product_id="p1",
            origin=TuyaOrigin(protocol=4, push_time_ms=1),
            dps=[DpReport(code="temp", value=215, device_time_ms=10)],
        ),
        source="/fleet/ingest",
        tenant="t",
        region="eu",
    )
    return topics.DEVICE_EVENTS.encode(event)


def raw(device: str, *, traceparent: str | None = None, redeliveries: int = 0) -> FakeMessage:
    return FakeMessage(
        report(device),
        topic=topics.DEVICE_EVENTS.name,
        properties={"traceparent": traceparent} if traceparent else {},
        partition_key=device,
        redelivery_count=redeliveries,
    )


class Handled:
    """The handler: what it got, in order, and the span current while it ran."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, trace.Span]] = []
        self.messages: list[DeviceMessage] = []

    async def __call__(self, event: DeviceEvent, message: DeviceMessage) -> None:
        self.seen.append((event.data.device_id, trace.get_current_span()))
        self.messages.append(message)


def failing_on(device: str, handled: Handled) -> Any:
    """A handler that raises for `device`'s events and hands the others to `handled`."""

    async def handle(event: DeviceEvent, message: DeviceMessage) -> None:
        if event.data.device_id == device:
            raise RuntimeError("injected")
        await handled(event, message)

    return handle


def tracer(root_sampled: bool) -> tuple[Any, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = ServiceTracerProvider(
        exports_spans=True,
        resource=Resource.create({}),
        sampler=ParentBased(ALWAYS_ON if root_sampled else ALWAYS_OFF),
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


async def batches_with(
    provider: TracerProvider, handled: Handled, broker: PulsarBroker | None = None
) -> tuple[DeviceEventBatches, InMemoryConsumer]:
    batches = DeviceEventBatches(
        broker or PulsarBroker(),
        handled,
        DeviceSubscription("status", max_redeliveries=2),
        dead_letter=topics.STATUS_DEAD_LETTER,
        tenant="t",
        tracer=provider.get_tracer("test"),
    )
    consumer = InMemoryConsumer()
    await batches.start(consumer)
    return batches, consumer


async def test_a_sampled_message_gets_its_consume_span_an_unsampled_one_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    provider, exporter = tracer(root_sampled=False)
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", provider)  # what `spans_exported` asks
    handled = Handled()
    batches, _ = await batches_with(provider, handled)
    try:
        await batches.process(
            [
                raw("d1", traceparent=f"00-{TRACE}-b7ad6b7169203331-01"),
                raw("d2", traceparent=f"00-{'1' * 32}-b7ad6b7169203331-00"),
                raw("d3", traceparent=f"00-{TRACE}-00f067aa0ba902b7-01"),
            ]
        )
    finally:
        await batches.close()

    assert [d for d, _ in handled.seen] == ["d1", "d2", "d3"]  # in arrival order
    spans = exporter.get_finished_spans()
    assert len(spans) == 2  # the sampled ones; nothing made for d2
    d1, d3 = spans
    assert d1.parent is not None
    assert (d1.parent.trace_id, d1.parent.span_id) == (int(TRACE, 16), 0xB7AD6B7169203331)
    attributes = dict(d1.attributes or {})
    assert d1.name == f"process {topics.DEVICE_EVENTS.name}"  # as the broker names its process spans
    assert attributes[DEVICE_ID] == "d1"
    assert attributes["messaging.operation.type"] == "process"
    assert attributes["messaging.consumer.group.name"] == "status"
    assert attributes["messaging.message.id"]
    assert d3.parent is not None
    assert d3.parent.span_id == 0x00F067AA0BA902B7
    # each handler ran in its own message's span (the writer's shadow-write span goes under it)
    assert handled.seen[0][1].get_span_context().span_id == d1.context.span_id
    assert not handled.seen[1][1].get_span_context().is_valid
    assert handled.seen[2][1].get_span_context().span_id == d3.context.span_id


async def test_messages_without_a_trace_share_one_root_span_per_batch_when_sampled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for sampled in (True, False):
        provider, exporter = tracer(root_sampled=sampled)
        monkeypatch.setattr(trace, "_TRACER_PROVIDER", provider)
        handled = Handled()
        batches, _ = await batches_with(provider, handled)
        try:
            await batches.process([raw("d1"), raw("d2"), raw("d3")])
        finally:
            await batches.close()
        assert [d for d, _ in handled.seen] == ["d1", "d2", "d3"]
        spans = exporter.get_finished_spans()
        if not sampled:
            assert spans == ()
            assert all(not span.is_recording() for _, span in handled.seen)
            continue
        (root,) = spans
        assert root.parent is None
        assert dict(root.attributes or {})["messaging.batch.message_count"] == 3
        assert {span.get_span_context().span_id for _, span in handled.seen} == {root.context.span_id}


async def test_a_message_nacked_past_its_redeliveries_is_dead_lettered_and_acked() -> None:
    broker = PulsarBroker()
    dead: list[bytes] = []

    @broker.subscriber(topics.STATUS_DEAD_LETTER.name, subscription="test")
    async def on_dead(message: Annotated[PulsarMessage, Context("message")]) -> None:
        dead.append(message.body)

    provider, _ = tracer(root_sampled=False)
    handled = Handled()
    async with TestPulsarBroker(broker):
        batches, consumer = await batches_with(provider, handled, broker)
        try:
            await batches.process([raw("d1", redeliveries=1), raw("d2", redeliveries=2)])
            first, last = handled.messages
            await first.nack()  # redelivered once so far: once more
            await last.nack()  # redelivered twice (max_redeliveries): given up on
            assert consumer.nacked == [first.raw]
            assert consumer.acked == [last.raw]
            await first.ack()
            assert consumer.acked == [last.raw, first.raw]
        finally:
            await batches.close()
    (letter,) = [topics.STATUS_DEAD_LETTER.decode(body) for body in dead]
    assert (letter.data.key, letter.data.redelivery_count) == ("d2", 2)


async def test_a_handler_that_raises_gets_its_message_nacked_and_the_batch_goes_on() -> None:
    provider, _ = tracer(root_sampled=False)
    handled = Handled()

    batches, consumer = await batches_with(provider, handled)
    batches.handle = failing_on("d1", handled)
    try:
        first = raw("d1")
        await batches.process([first, raw("d2")])
    finally:
        await batches.close()
    assert consumer.nacked == [first]
    assert [d for d, _ in handled.seen] == ["d2"]


class Flooding:
    """A consumer that always holds a message (a backlog), `count` of them, then closes."""

    def __init__(self, count: int) -> None:
        self.left = count
        self.acked: list[Any] = []

    async def receive(self) -> Any:
        if not self.left:
            raise PulsarException(pulsar.Result.AlreadyClosed)
        self.left -= 1
        return raw(f"d{self.left}")

    async def acknowledge(self, message: Any) -> None:
        self.acked.append(message)

    async def close(self) -> None:
        self.left = 0


async def test_a_backlog_does_not_starve_the_handlers_other_tasks() -> None:
    """The writer flushes in tasks of its own: between batches the loop lets them run, even while the client
    always holds another message (before, they waited for back-pressure, tens of thousands of messages)."""
    provider, _ = tracer(root_sampled=False)
    order: list[str] = []

    started: list[asyncio.Task[None]] = []

    async def flush() -> None:
        order.append("flush")

    async def handle(event: DeviceEvent, message: DeviceMessage) -> None:
        order.append("message")
        if len(order) == 5:  # a batch is due: the writer starts its flush task
            started.append(asyncio.create_task(flush()))

    batches, _ = await batches_with(provider, Handled())
    await batches.close()
    batches.handle = handle
    await batches.start(Flooding(100))
    assert batches._task is not None
    await asyncio.wait_for(batches._task, 10)
    await started[0]
    assert order.count("message") == 100
    assert order.index("flush") < 10  # ran at once, not once the backlog was through


async def test_the_subscription_is_counted_as_the_brokers_own_subscribers_count_theirs() -> None:
    registry = CollectorRegistry()
    provider, _ = tracer(root_sampled=False)
    handled = Handled()

    batches, _ = await batches_with(provider, handled, PulsarBroker(metrics=registry))
    batches.handle = failing_on("d1", handled)
    try:
        undecodable = FakeMessage(
            b'{"tenant": "t"}', topic=topics.DEVICE_EVENTS.name, properties={}, partition_key="d9"
        )
        await batches.process([raw("d1"), raw("d2"), raw("d3", redeliveries=2), undecodable])
        _, last = handled.messages
        await last.nack()  # redelivered twice (max_redeliveries): dead-lettered
    finally:
        await batches.close()
    labels = {"topic": topics.DEVICE_EVENTS.name, "subscription": "status"}

    def value(name: str, **more: str) -> float | None:
        return registry.get_sample_value(name, {**labels, **more})

    assert value("fleet_bus_messages_processed_total") == 3  # the handler was called for three
    assert value("fleet_bus_handler_seconds_count") == 3
    assert value("fleet_bus_messages_failed_total", outcome="nack") == 1  # d1's handler raised
    assert value("fleet_bus_messages_failed_total", outcome="dead_letter") == 1
    assert value("fleet_bus_messages_failed_total", outcome="reject") == 1
