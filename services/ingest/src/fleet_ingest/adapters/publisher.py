"""Publishing to the internal bus: device events and dead letters, pipelined and in receive order.

Built on the bus's `PulsarBroker` (its client, connection handling and readiness) and `ProducerOptions`
(KeyBased batching, so a KeyShared consumer gets each device's events in one ordered stream). The broker's
`publish` waits for each message to persist before returning; ingest instead starts sends in receive order
and collects the confirmations later, so it holds its own producers on the broker's client.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

import pulsar
from pulsar import asyncio as pa

from fleet_contracts import topics
from fleet_shared.pulsar import ProducerOptions, PulsarBroker

log = logging.getLogger(__name__)


class EventSink(Protocol):
    """Starts sends in call order; each returned future resolves once the broker has persisted the message."""

    def send_event(self, body: bytes, key: str | None, properties: dict[str, str]) -> asyncio.Future[Any]: ...
    def send_dead_letter(
        self, body: bytes, key: str | None, properties: dict[str, str]
    ) -> asyncio.Future[Any]: ...
    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> bool: ...


class PulsarEventSink:
    def __init__(self, broker: PulsarBroker, options: ProducerOptions) -> None:
        self._broker = broker
        self._options = options
        self._events: pa.Producer | None = None
        self._dead_letters: pa.Producer | None = None

    async def start(self) -> None:
        client = await self._broker.connect()
        kwargs = self._options.as_kwargs()
        self._events = await client.create_producer(topics.DEVICE_EVENTS.name, **kwargs)
        self._dead_letters = await client.create_producer(topics.INGEST_TUYA_DEAD_LETTER.name, **kwargs)

    @staticmethod
    def _send(
        producer: pa.Producer | None, body: bytes, key: str | None, properties: dict[str, str]
    ) -> asyncio.Future[Any]:
        if producer is None:
            raise RuntimeError("event sink not started")
        # A task's first step runs in creation order (call_soon is FIFO) and `Producer.send` hands the
        # message to the C++ producer before its first await: sends reach the producer in call order.
        task: asyncio.Future[Any] = asyncio.ensure_future(
            producer.send(body, properties=properties, partition_key=key)
        )
        return task

    def send_event(self, body: bytes, key: str | None, properties: dict[str, str]) -> asyncio.Future[Any]:
        return self._send(self._events, body, key, properties)

    def send_dead_letter(
        self, body: bytes, key: str | None, properties: dict[str, str]
    ) -> asyncio.Future[Any]:
        return self._send(self._dead_letters, body, key, properties)

    async def ping(self) -> bool:
        producers = [p for p in (self._events, self._dead_letters) if p is not None]
        return bool(producers) and all(p.is_connected() for p in producers)

    async def close(self) -> None:
        """Flush, then close both producers (the broker closes the client)."""
        for producer in (self._events, self._dead_letters):
            if producer is None:
                continue
            try:
                await producer.flush()
            except pa.PulsarException as exc:
                log.warning("flushing %s failed: %s", producer.topic(), exc)
            try:
                await producer.close()
            except pa.PulsarException as exc:
                log.warning("closing the producer of %s failed: %s", producer.topic(), exc)
        self._events = self._dead_letters = None


def is_transient(exc: BaseException) -> bool:
    """Broker-side failures worth retrying (all of them, for ingest: it never drops a message)."""
    return isinstance(exc, pa.PulsarException | pulsar.Timeout | ConnectionError | TimeoutError)
