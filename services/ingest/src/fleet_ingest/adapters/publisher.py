"""Publishing to the internal bus: device events and dead letters, pipelined and in receive order.

Built on the bus's `PulsarBroker` (its client, connection handling and readiness) and `ProducerOptions`
(KeyBased batching, so a KeyShared consumer gets each device's events in one ordered stream). The broker's
`publish` waits for each message to persist before returning; ingest instead starts sends in receive order
and collects the confirmations later, so it holds its own producers on the broker's client.

A send is a `Send` ticket, not an asyncio future: the producer confirms on its own thread, and waking the
event loop once per confirmation (a task, a future and a self-pipe write per message) cost more than the
rest of the hot path together. `Confirmations` marks the ticket and wakes the loop once per burst.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Protocol

import _pulsar
import pulsar
from pulsar import asyncio as pa

from fleet_contracts import topics
from fleet_shared.pulsar import ProducerOptions, PulsarBroker

log = logging.getLogger(__name__)


class Send:
    """One started send: `done` once the broker answered, `error` set if the send failed."""

    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = False
        self.error: BaseException | None = None


class Confirmations:
    """Completes `Send`s from any thread and wakes the loop at most once per burst of completions.

    `progress` is set after any completion; the waiter clears it before looking at its tickets, and a ticket
    is marked done before the wake-up is requested, so no completion is ever missed.
    """

    def __init__(self) -> None:
        self.progress = asyncio.Event()
        self.failures = 0
        """Sends failed so far: Pulsar fails every pending send behind a failed one, so the pipeline starts
        no send once this changed (not even in the gap before it sees the failed ticket)."""
        self._loop = asyncio.get_running_loop()
        self._wake_pending = False

    def complete(self, send: Send, error: BaseException | None = None) -> None:
        if error is not None:
            self.failures += 1
        send.error = error
        send.done = True
        if not self._wake_pending:
            self._wake_pending = True
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits any more
                self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        self._wake_pending = False
        self.progress.set()

    async def wait(self, send: Send) -> None:
        """Until `send` is done."""
        while not send.done:
            self.progress.clear()
            if send.done:
                return
            await self.progress.wait()


class SendFailedError(Exception):
    """The broker did not persist a message (the `pulsar.Result` is in the text)."""


class EventSink(Protocol):
    """Starts sends in call order; each ticket is done once the broker has persisted the message."""

    @property
    def confirmations(self) -> Confirmations: ...
    def send_event(self, body: bytes, key: str | None, properties: dict[str, str]) -> Send: ...
    def send_dead_letter(self, body: bytes, key: str | None, properties: dict[str, str]) -> Send: ...
    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> bool: ...


class PulsarEventSink:
    def __init__(self, broker: PulsarBroker, options: ProducerOptions) -> None:
        self._broker = broker
        self._options = options
        self._events: pa.Producer | None = None
        self._dead_letters: pa.Producer | None = None
        self.confirmations: Confirmations

    async def start(self) -> None:
        self.confirmations = Confirmations()
        client = await self._broker.connect()
        kwargs = self._options.as_kwargs()
        self._events = await client.create_producer(topics.DEVICE_EVENTS.name, **kwargs)
        self._dead_letters = await client.create_producer(topics.INGEST_TUYA_DEAD_LETTER.name, **kwargs)

    def _send(
        self, producer: pa.Producer | None, body: bytes, key: str | None, properties: dict[str, str]
    ) -> Send:
        if producer is None:
            raise RuntimeError("event sink not started")
        builder = _pulsar.MessageBuilder()
        builder.content(body)
        for name, value in properties.items():
            builder.property(name, value)
        if key:
            builder.partition_key(key)
        send = Send()
        # The C++ producer queues the message now (sends reach it in call order) and calls back on its thread.
        producer._producer.send_async(builder.build(), self._callback(send))
        return send

    def _callback(self, send: Send) -> Callable[[Any, Any], None]:
        complete = self.confirmations.complete

        def sent(result: Any, _message_id: Any) -> None:  # on a C++ thread: must never raise
            complete(send, None if result == pulsar.Result.Ok else SendFailedError(str(result)))

        return sent

    def send_event(self, body: bytes, key: str | None, properties: dict[str, str]) -> Send:
        return self._send(self._events, body, key, properties)

    def send_dead_letter(self, body: bytes, key: str | None, properties: dict[str, str]) -> Send:
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
