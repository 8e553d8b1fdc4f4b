"""The outbox relay's publisher: a flush's events sent together, confirmed together.

The shared `OutboxPublisher` awaits each event through the broker: a task per key, a publish span and a
correlation id per event, a future and a loop wake-up per confirmation. A flush relays up to a few thousand
events, so here they are started in one pass on the shared producer's confirmed sends
(`fleet_shared.pulsar.confirmed`: one producer per topic, sends queued in the client in call order,
confirmations collected once per burst) and awaited together; in a traced flush one `status events publish`
span covers them all and every event carries its `traceparent`.

Order: each topic has one producer, which keeps the order the sends were started in, so a device's events
reach their topic in the order of its outbox (as with the one-after-another publish they replace). Pulsar
fails every pending send behind a failed one, so a failure never leaves a later event persisted ahead of an
earlier one that is not: `publish` raises, the entries stay in their documents and the next relay sends
them again (consumers drop repeats by event id).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Tracer
from opentelemetry.util.types import AttributeValue

from fleet_contracts.outbox import EVENT_ID_PROPERTY, OutboxEntry
from fleet_shared.pulsar import Confirmations, ConfirmedSender, ProducerOptions, PulsarBroker, Send
from fleet_shared.tracing import messaging

PUBLISH_SPAN = "status events publish"
CORRELATION_ID = "correlation_id"  # the broker's property name for FastStream's correlation id


class FlushPublisher:
    """`EventPublisher` on confirmed sends; at most `max_in_flight` sends outstanding across every publish in
    progress (the writer runs flushes side by side, and the start-up recovery relays thousands at once), at
    most each producer's `max_pending_messages`, so none fails for a full client queue."""

    def __init__(
        self,
        broker: PulsarBroker,
        *,
        options: ProducerOptions | None = None,
        max_in_flight: int = 1000,
        tracer: Tracer | None = None,
    ) -> None:
        self.broker = broker
        self.options = options
        self.max_in_flight = max_in_flight
        self.tracer = tracer or trace.get_tracer(__name__)
        self._senders: dict[str, asyncio.Task[ConfirmedSender]] = {}
        self._confirmations: Confirmations | None = None
        # sends started and not known to be confirmed, oldest first, across concurrent publishes
        self._outstanding: deque[Send] = deque()

    async def publish(self, entries: Sequence[OutboxEntry]) -> None:
        if not entries:
            return
        if not trace.get_current_span().is_recording():
            await self._send_all(entries, {})
            return
        topics = sorted({e.topic for e in entries})
        # the broker's send span's attributes (`fleet_shared.tracing.messaging`), for a batch of sends
        attributes: dict[str, AttributeValue] = {
            **messaging.operation(messaging.SEND, "send", topics[0]),
            messaging.BATCH_MESSAGE_COUNT: len(entries),
        }
        if len(topics) > 1:
            attributes[messaging.DESTINATION_NAME] = ",".join(topics)
        with self.tracer.start_as_current_span(PUBLISH_SPAN, kind=SpanKind.PRODUCER, attributes=attributes):
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            await self._send_all(entries, carrier)

    async def _send_all(self, entries: Sequence[OutboxEntry], carrier: dict[str, str]) -> None:
        confirmations = self._confirmations_now()
        senders = {t: await self._sender(t) for t in {e.topic for e in entries}}
        outstanding = self._outstanding
        sends: list[Send] = []
        for e in entries:
            while outstanding and outstanding[0].done:
                outstanding.popleft()
            while len(outstanding) >= self.max_in_flight:
                await confirmations.wait(outstanding[0])
                while outstanding and outstanding[0].done:
                    outstanding.popleft()
            properties = {EVENT_ID_PROPERTY: e.id, CORRELATION_ID: e.id, **carrier}
            send = senders[e.topic].send(e.body, e.key, properties)
            sends.append(send)
            outstanding.append(send)
        for send in sends:
            await confirmations.wait(send)
        failed = next((s.error for s in sends if s.error is not None), None)
        if failed is not None:
            raise failed

    def _confirmations_now(self) -> Confirmations:
        if self._confirmations is None:  # made in the running loop it wakes
            self._confirmations = Confirmations()
        return self._confirmations

    async def _sender(self, topic: str) -> ConfirmedSender:
        """The topic's sender, made once even when two flushes ask at the same time (the broker closes it)."""
        task = self._senders.get(topic)
        if task is None or (task.done() and (task.cancelled() or task.exception() is not None)):
            confirmations = self._confirmations_now()
            producer = self.broker.pulsar_producer
            task = self._senders[topic] = asyncio.ensure_future(
                producer.confirmed_sender(topic, confirmations, self.options)
            )
        return await asyncio.shield(task)
