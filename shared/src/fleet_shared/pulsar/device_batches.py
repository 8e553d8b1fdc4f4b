"""The device topic received in batches, for a consumer that settles its messages later (status's writer).

`subscribe_device_events` hands each message through FastStream: a parse into a `PulsarMessage`, the
middleware stack, a span per message (made, sampled or not), a JSON parse to check the tenant and another
to decode, an await per step. At thousands of reports a second that was a quarter of status's CPU. Here
the client's receiver queue is drained in batches (whatever it already holds, up to `max_batch`: one
loop wake-up per batch, not per message), each body decoded once with the topic's one TypeAdapter, and a
span made only where a trace is recorded:

- a message whose `traceparent` is sampled (the decision taken where its trace started: ingest) gets its
  consume span, the child of that context, tagged as the broker's are, and its handler runs in it;
- a message whose `traceparent` is not sampled gets none (nothing would record it);
- messages without a `traceparent` share one consume span per batch (its root: the sampler decides once
  per batch, as ingest does for Tuya's stream).

Same semantics as `subscribe_device_events` otherwise: KeyShared, another project's events acked unread,
an undecodable body dead-lettered at once, a nacked message dead-lettered once it was redelivered
`max_redeliveries` times. The handler settles each message (`DeviceMessage.ack` / `nack`), later.

    batches = DeviceEventBatches(broker, handle, subscription, dead_letter=topics.STATUS_DEAD_LETTER,
                                 tenant=tenant)
    await batches.start()          # after broker.connect()
    await batches.stop_receiving() # no new messages; held ones can still be settled
    await batches.close()          # then the consumer closes (unsettled messages are redelivered)

(A module of its own beside the broker, on its public pieces: the receive shortcuts in `receiver.py`, the
dead-letter command, the trace context reader of `opentelemetry.py`.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pulsar
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Tracer
from pulsar import ConsumerType, InitialPosition
from pulsar.asyncio import PulsarException
from pydantic import ValidationError

from fleet_contracts import topics
from fleet_contracts.device import DeviceEvent
from fleet_shared.tracing import messaging
from fleet_shared.tracing.attributes import key_attributes
from fleet_shared.tracing.provider import spans_exported

from .broker import PulsarBroker
from .deadletter import dead_letter_command
from .device_events import DeviceSubscription, of_tenant
from .metrics import SubscriptionMetrics
from .opentelemetry import carried_context
from .receiver import NativeReceiver, acknowledge_now, receive_ready

log = logging.getLogger(__name__)

_TRACEPARENT = "traceparent"


class DeviceMessage:
    """One received message, settled by its handler: the writer's `Settlement`."""

    __slots__ = ("_batches", "raw")

    def __init__(self, batches: DeviceEventBatches, raw: pulsar.Message) -> None:
        self._batches = batches
        self.raw = raw

    async def ack(self) -> None:
        await self._batches.ack(self.raw)

    async def nack(self) -> None:
        await self._batches.nack(self.raw)


DeviceBatchHandler = Callable[[DeviceEvent, DeviceMessage], Awaitable[None]]


class DeviceEventBatches:
    def __init__(
        self,
        broker: PulsarBroker,
        handle: DeviceBatchHandler,
        subscription: DeviceSubscription,
        *,
        dead_letter: topics.Topic[Any],
        tenant: str,
        max_batch: int = 500,
        tracer: Tracer | None = None,
    ) -> None:
        self.broker = broker
        self.handle = handle
        self.subscription = subscription
        self.dead_letter_topic = dead_letter.name
        self.tenant = tenant
        self.max_batch = max_batch
        self.tracer = tracer or trace.get_tracer(__name__)
        self.topic = topics.DEVICE_EVENTS.name
        self._consumer: Any = None
        self._task: asyncio.Task[None] | None = None
        # the bus's RED metrics, as the broker's own subscribers count them (`metrics.py`), resolved once
        bus_metrics = broker.config.bus_metrics
        self._measured: SubscriptionMetrics | None = (
            None if bus_metrics is None else bus_metrics.subscription(self.topic, subscription.name)
        )

    # --- lifecycle ------------------------------------------------------------------------------------

    async def start(self, consumer: Any = None) -> None:
        """Subscribe and start receiving; `consumer`: receive from this one instead (an in-memory consumer
        in unit tests, `pulsar.testing.InMemoryConsumer`)."""
        if self._consumer is not None:
            return
        if consumer is not None:
            self._consumer = consumer
            self._task = asyncio.create_task(self._receive_loop(consumer), name="device-event-batches")
            return
        client = await self.broker.connect()
        s = self.subscription
        self._consumer = await client.subscribe(
            self.topic,
            s.name,
            consumer_type=ConsumerType.KeyShared,
            initial_position=InitialPosition.Earliest
            if s.initial_position == "earliest"
            else InitialPosition.Latest,
            receiver_queue_size=s.receiver_queue_size,
            negative_ack_redelivery_delay_ms=1000,
        )
        self._task = asyncio.create_task(self._receive_loop(self._consumer), name="device-event-batches")

    async def stop_receiving(self) -> None:
        """No new messages; those handed out can still be settled until `close`."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def close(self) -> None:
        await self.stop_receiving()
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            with contextlib.suppress(PulsarException):
                await consumer.close()

    # --- receiving ------------------------------------------------------------------------------------

    async def _receive_loop(self, consumer: Any) -> None:
        receive = NativeReceiver(consumer).receive if NativeReceiver.supports(consumer) else consumer.receive
        while True:
            try:
                first = await receive()
            except PulsarException as e:
                if e.error() == pulsar.Result.AlreadyClosed:
                    return
                log.warning("receiving device events failed, retrying: %s", e)
                await asyncio.sleep(0.5)
                continue
            batch = [first]
            if NativeReceiver.supports(consumer):
                batch += receive_ready(consumer, self.max_batch - 1)
            try:
                await self.process(batch)
            except asyncio.CancelledError:
                raise
            except Exception:
                # never lose the loop (each message's own failure is nacked in `_handle`; this is one the
                # batch's decoding or dead-lettering raised): its unsettled messages come back once the
                # consumer closes
                log.exception("handling a batch of %d device events failed", len(batch))
            # Let the handler's other tasks run (status's flushes). While messages arrive faster than they
            # are handled, the client always holds one and nothing here suspends: the writer's flushes then
            # waited until back-pressure stopped the loop (tens of thousands of messages, a minute late).
            await asyncio.sleep(0)

    async def process(self, batch: list[pulsar.Message]) -> None:
        """Decode, filter and hand over `batch` in order; spans only where a trace is recorded."""
        tracing = spans_exported()
        untraced_roots: list[tuple[DeviceEvent, pulsar.Message]] = []
        for raw in batch:
            event = await self._decoded(raw)
            if event is None:
                continue
            parent = raw.properties().get(_TRACEPARENT) if tracing else None
            if parent is None:
                if tracing:
                    untraced_roots.append((event, raw))
                    continue
                await self._handle(event, raw)
            elif not _sampled(parent):  # not sampled where the trace started: nothing records it
                await self._handle(event, raw)
            else:
                await self._handle_traced(event, raw)
        if untraced_roots:
            await self._handle_as_batch(untraced_roots)

    async def _decoded(self, raw: pulsar.Message) -> DeviceEvent | None:
        """The event, or None once the message is settled here (another project's, or undecodable)."""
        body = raw.data()
        try:
            event = topics.DEVICE_EVENTS.decode(body)
        except (ValidationError, ValueError) as e:
            if not of_tenant(body, self.tenant):
                await self.ack(raw)  # someone else's, in a shape we do not know: not ours to dead-letter
                return None
            log.warning("undecodable device event dead-lettered: %s", str(e)[:300])
            self._count_failure("reject")
            await self._dead_letter(raw, e, gave_up="rejected")
            return None
        if event.tenant != self.tenant:
            await self.ack(raw)  # another Tuya project's device: acked unread (see `subscribe_device_events`)
            return None
        return event

    async def _handle_traced(self, event: DeviceEvent, raw: pulsar.Message) -> None:
        span = self.tracer.start_span(
            messaging.span_name("process", self.topic),
            carried_context(raw.properties()),
            kind=SpanKind.CONSUMER,
            attributes=self._attributes(raw),
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            await self._handle(event, raw)
        finally:
            otel_context.detach(token)
            span.end()

    async def _handle_as_batch(self, items: list[tuple[DeviceEvent, pulsar.Message]]) -> None:
        """Messages that brought no trace: one consume span (a root) for all of them, when sampled."""
        attributes: dict[str, Any] = {
            **messaging.operation(messaging.PROCESS, "process", self.topic),
            messaging.CONSUMER_GROUP_NAME: self.subscription.name,
            messaging.BATCH_MESSAGE_COUNT: len(items),
        }
        if len(items) == 1:
            attributes.update(self._attributes(items[0][1]))
        span = self.tracer.start_span(
            messaging.span_name("process", self.topic), kind=SpanKind.CONSUMER, attributes=attributes
        )
        # handlers run in it only when it is recorded (an unsampled root would only cost a context switch)
        token = otel_context.attach(trace.set_span_in_context(span)) if span.is_recording() else None
        try:
            for event, raw in items:
                await self._handle(event, raw)
        finally:
            if token is not None:
                otel_context.detach(token)
            span.end()

    async def _handle(self, event: DeviceEvent, raw: pulsar.Message) -> None:
        """The handler settles the message later; one that raises gets it nacked now (NACK_ON_ERROR's way),
        and the batch goes on."""
        began = time.perf_counter()
        try:
            await self.handle(event, DeviceMessage(self, raw))
        except Exception as e:
            log.warning("handling a device event failed, nacked: %r", e)
            await self.nack(raw)
        finally:
            if (measured := self._measured) is not None:
                # the handler's own time: it settles the message later (as under the broker's manual acks)
                measured.seconds.observe(time.perf_counter() - began)
                measured.processed.inc()

    def _count_failure(self, outcome: str) -> None:
        if (measured := self._measured) is not None:
            measured.failed[outcome].inc()

    def _attributes(self, raw: pulsar.Message) -> dict[str, Any]:
        # as the broker's process span has them (`fleet_shared.tracing.messaging`)
        attributes: dict[str, Any] = {
            **messaging.operation(messaging.PROCESS, "process", str(raw.topic_name())),
            messaging.CONSUMER_GROUP_NAME: self.subscription.name,
            messaging.MESSAGE_ID: str(raw.message_id()),
            messaging.MESSAGE_BODY_SIZE: len(raw.data()),
        }
        if key := raw.partition_key():
            attributes[messaging.PULSAR_MESSAGE_KEY] = key
            attributes.update(key_attributes(self.topic, key))
        return attributes

    # --- settling -------------------------------------------------------------------------------------

    async def ack(self, raw: pulsar.Message) -> None:
        consumer = self._consumer
        if consumer is None:
            raise PulsarException(pulsar.Result.AlreadyClosed, "the device event consumer is closed")
        if not acknowledge_now(consumer, raw):  # the client only queues the ack: no await, nearly always
            await consumer.acknowledge(raw)

    async def nack(self, raw: pulsar.Message) -> None:
        consumer = self._consumer
        if consumer is None:
            raise PulsarException(pulsar.Result.AlreadyClosed, "the device event consumer is closed")
        if raw.redelivery_count() >= self.subscription.max_redeliveries:
            self._count_failure("dead_letter")
            await self._dead_letter(raw, None, gave_up="nacked")
        else:
            self._count_failure("nack")
            await consumer.negative_acknowledge(raw)

    async def _dead_letter(self, raw: pulsar.Message, error: BaseException | None, *, gave_up: str) -> None:
        try:
            command = dead_letter_command(
                raw, error, subscription=self.subscription.name, topic=self.dead_letter_topic, gave_up=gave_up
            )
            await self.broker.pulsar_producer.publish(command)
        except Exception as e:
            # never lose it: a nack makes Pulsar redeliver, and the next failure tries the dead letter again
            log.error("dead-lettering failed, nacking instead: %r", e)
            if self._consumer is not None:
                await self._consumer.negative_acknowledge(raw)
            return
        await self.ack(raw)


def _sampled(traceparent: str) -> bool:
    """Whether a W3C `traceparent` says its trace is recorded (the flags' last bit, at the same offset in
    every version: `vv-<32>-<16>-ff...`; a malformed one: asked of the sampler, through the span
    `carried_context` makes for it)."""
    try:
        return bool(int(traceparent[53:55], 16) & 1)
    except ValueError:
        return True
