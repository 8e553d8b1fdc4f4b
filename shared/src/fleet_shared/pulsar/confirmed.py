"""Sends started now and confirmed later: for a caller that pipelines many sends and settles them in order.

`PulsarBroker.publish` waits for each message to persist before it returns. A consumer that republishes a
stream (ingest) instead starts sends in receive order and collects the confirmations later; get a
`ConfirmedSender` for that from `broker.pulsar_producer.confirmed_sender(topic, options, confirmations)`.

A send is a `Send` ticket, not an asyncio future: the producer confirms on its own thread, and waking the
event loop once per confirmation (a task, a future and a self-pipe write per message) cost more than the
rest of ingest's hot path together (commit 47e2ca2, bench/ingest.py). `Confirmations` marks the ticket and
wakes the loop once per burst of confirmations.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import pulsar
from pulsar import asyncio as pa

from . import internals

if TYPE_CHECKING:
    from .metrics import TopicMetrics
    from .producer import _BatchFlusher

log = logging.getLogger(__name__)

_OK = pulsar.Result.Ok


class Send:
    """One started send: `done` once the broker answered, `error` set if the send failed."""

    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = False
        self.error: BaseException | None = None


class SendFailedError(Exception):
    """The broker did not persist a message (the `pulsar.Result` is in the text)."""


class WakeOnce:
    """Runs `callback` on the event loop once per burst of `request()`s made from any thread: a request made
    while one is pending joins it. Whatever the callback looks at must be in place before `request()`; the
    pending flag is cleared before the callback runs, so nothing requested is ever missed. Made inside the
    running loop it wakes."""

    __slots__ = ("_callback", "_loop", "_pending")

    def __init__(self, callback: Callable[[], object]) -> None:
        self._loop = asyncio.get_running_loop()
        self._callback = callback
        self._pending = False

    def request(self) -> None:
        """Safe on a client thread: never raises."""
        if not self._pending:
            self._pending = True
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits any more
                self._loop.call_soon_threadsafe(self._run)

    def _run(self) -> None:
        self._pending = False
        self._callback()


class Confirmations:
    """Completes `Send`s from any thread and wakes the loop at most once per burst of completions.

    `progress` is set after any completion; the waiter clears it before looking at its tickets, and a ticket
    is marked done before the wake-up is requested, so no completion is ever missed. Made inside the
    running loop it wakes.
    """

    def __init__(self) -> None:
        self.progress = asyncio.Event()
        self.failures = 0
        """Sends failed so far: Pulsar fails every pending send behind a failed one, so a caller starts
        no send once this changed (not even in the gap before it sees the failed ticket)."""
        self._wake = WakeOnce(self.progress.set)

    def complete(self, send: Send, error: BaseException | None = None) -> None:
        if error is not None:
            self.failures += 1
        send.error = error
        send.done = True
        self._wake.request()

    async def wait(self, send: Send) -> None:
        """Until `send` is done."""
        while not send.done:
            self.progress.clear()
            if send.done:
                return
            await self.progress.wait()


class ConfirmedSender:
    """Sends to one topic, queued in the client in call order, each confirmed through its `Send` ticket.

    No in-flight bound of its own: the caller bounds what it has outstanding below the producer's
    `max_pending_messages`, so a send never fails with ProducerQueueIsFull. A KeyBased producer gets the
    shared producer's batch flusher (see `_BatchFlusher`).
    """

    __slots__ = ("_closed", "_confirmations", "_flusher", "_metrics", "_native", "_producer")

    def __init__(
        self,
        producer: pa.Producer,
        confirmations: Confirmations,
        flusher: _BatchFlusher | None,
        metrics: TopicMetrics | None = None,
    ) -> None:
        native = internals.native_producer(producer)
        if native is None:
            raise TypeError("this pulsar.asyncio.Producer keeps no native producer (see pulsar.internals)")
        self._producer = producer
        self._native = native
        self._confirmations = confirmations
        self._flusher = flusher
        self._metrics = metrics
        self._closed = False

    @property
    def topic(self) -> str:
        return str(self._producer.topic())

    @property
    def confirmations(self) -> Confirmations:
        return self._confirmations

    def send(self, body: bytes, key: str | None, properties: Mapping[str, str]) -> Send:
        """Queue the message in the client now; the ticket is done once the broker persisted it (or not)."""
        if self._closed:
            raise RuntimeError(f"the sender of {self.topic} is closed")
        send = Send()
        if self._flusher is not None:
            self._flusher.message_added()
        self._native.send_async(internals.build_message(body, properties, key), self._callback(send))
        return send

    def _callback(self, send: Send) -> Callable[[Any, Any], None]:
        complete = self._confirmations.complete
        metrics = self._metrics
        if metrics is None:

            def sent(result: Any, _message_id: Any) -> None:  # on a client thread: must never raise
                complete(send, None if result == _OK else SendFailedError(str(result)))

            return sent
        began = time.perf_counter()

        def counted(result: Any, _message_id: Any) -> None:  # on a client thread: must never raise
            if result == _OK:  # prometheus_client's metrics are thread-safe
                metrics.seconds.observe(time.perf_counter() - began)
                metrics.sent.inc()
                complete(send, None)
            else:
                metrics.failures.inc()
                complete(send, SendFailedError(str(result)))

        return counted

    def is_connected(self) -> bool:
        return not self._closed and bool(self._producer.is_connected())

    async def close(self) -> None:
        """Flush, then close the producer; once (later calls do nothing)."""
        if self._closed:
            return
        self._closed = True
        if self._flusher is not None:
            self._flusher.stop()
        try:
            await self._producer.flush()
        except pa.PulsarException as exc:
            log.warning("flushing %s failed: %s", self.topic, exc)
        try:
            await self._producer.close()
        except pa.PulsarException as exc:
            log.warning("closing the producer of %s failed: %s", self.topic, exc)
