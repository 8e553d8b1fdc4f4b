"""Publishing to the internal bus: device events and dead letters, pipelined and in receive order.

Through the shared producer's confirmed sends (`PulsarProducer.confirmed_sender`): each send is started in
call order and confirmed later through a `Send` ticket, on a producer of its own per topic with the
`ProducerOptions` given (KeyBased batching, so a KeyShared consumer gets each device's events in one ordered
stream, with the shared producer's batch flusher bounding the batching delay). The broker's `publish`
awaits each message instead, a future and a loop wake-up per message: ingest starts thousands of sends a
second and settles them in batches (see `fleet_shared.pulsar.confirmed`).
"""

from __future__ import annotations

from fleet_contracts import topics
from fleet_shared.pulsar import Confirmations, ConfirmedSender, ProducerOptions, PulsarBroker, Send


class PulsarEventSink:
    def __init__(self, broker: PulsarBroker, options: ProducerOptions) -> None:
        self._broker = broker
        self._options = options
        self._events: ConfirmedSender | None = None
        self._dead_letters: ConfirmedSender | None = None
        self.confirmations: Confirmations

    async def start(self) -> None:
        self.confirmations = Confirmations()
        await self._broker.connect()
        producer = self._broker.pulsar_producer
        self._events = await producer.confirmed_sender(
            topics.DEVICE_EVENTS.name, self.confirmations, self._options
        )
        self._dead_letters = await producer.confirmed_sender(
            topics.INGEST_TUYA_DEAD_LETTER.name, self.confirmations, self._options
        )

    def send_event(self, body: bytes, key: str | None, properties: dict[str, str]) -> Send:
        if self._events is None:
            raise RuntimeError("event sink not started")
        return self._events.send(body, key, properties)

    def send_dead_letter(self, body: bytes, key: str | None, properties: dict[str, str]) -> Send:
        if self._dead_letters is None:
            raise RuntimeError("event sink not started")
        return self._dead_letters.send(body, key, properties)

    async def ping(self) -> bool:
        senders = [s for s in (self._events, self._dead_letters) if s is not None]
        return bool(senders) and all(s.is_connected() for s in senders)

    async def close(self) -> None:
        """Flush, then close both producers (the broker closes the client)."""
        for sender in (self._events, self._dead_letters):
            if sender is not None:
                await sender.close()
        self._events = self._dead_letters = None
