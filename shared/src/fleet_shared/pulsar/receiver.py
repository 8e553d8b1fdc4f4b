"""A consumer's receive and ack without an event-loop round trip per message when it can be avoided.

`pulsar.asyncio.Consumer.receive()` creates a future per message and completes it through
`call_soon_threadsafe`, even when the client already holds the message in its receiver queue and calls
back at once on the calling thread: every message then costs a self-pipe write, a selector wake-up and a
loop iteration. Its `acknowledge()` does the same although the client only queues the ack.

`NativeReceiver` talks to the wrapped native consumer instead (reached through `internals`): a message
already queued is returned without suspending; otherwise it waits on one future completed from the
client's thread, exactly as `pulsar.asyncio` does. It is never cancelled by the receive loop (a cancelled
receive would lose the message it was about to return).

`receive_ready` and `acknowledge_cumulative` are the same shortcuts for a consumer that takes messages in
batches and acks them in order (ingest's Tuya consumer).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterable
from typing import Any

import pulsar
from pulsar import asyncio as pa
from pulsar.asyncio import PulsarException

from . import internals

_OK = pulsar.Result.Ok


class NativeReceiver:
    """Receives from one `pulsar.asyncio.Consumer`; one receive at a time (the subscriber's loop).

    While messages keep arriving faster than they are handled (a backlog), the next one is taken with the
    client's non-blocking `receive(0)`: one call, where `receive_async` with a callback it runs at once
    costs a callable converted for C++ and the GIL released and taken twice. Once the queue is found
    empty, receives go back to `receive_async` (a failed `receive(0)` raises, which costs more than it
    saves) until one finds a message already queued again. `poll` is off for a consumer without a receiver
    queue, whose `receive(0)` would ask the broker and block.
    """

    __slots__ = ("_loop", "_native", "_poll", "_polling", "_ready", "_schema", "_thread", "_waiter")

    def __init__(self, consumer: pa.Consumer, *, poll: bool = True) -> None:
        self._native: Any = internals.native_consumer(consumer)
        self._schema: Any = internals.consumer_schema(consumer)
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._ready: tuple[Any, Any] | None = None
        self._waiter: asyncio.Future[tuple[Any, Any]] | None = None
        self._poll = poll
        self._polling = False

    @staticmethod
    def supports(consumer: object) -> bool:
        return internals.is_wrapped_consumer(consumer)

    async def receive(self) -> pulsar.Message:
        if self._polling:
            try:
                return internals.wrap_message(self._native.receive(0), self._schema)
            except pulsar.PulsarException:  # Timeout: nothing queued (or closed: the async path says so)
                self._polling = False
        self._native.receive_async(self._on_message)
        ready, self._ready = self._ready, None
        if ready is None:
            # Nothing queued: the client calls back from its own thread once a message arrives.
            waiter = self._waiter = self._loop.create_future()
            ready = await waiter
        else:
            self._polling = self._poll  # one was queued already: more probably are
        result, native_msg = ready
        if result != _OK:
            raise PulsarException(result)
        return internals.wrap_message(native_msg, self._schema)

    def _on_message(self, result: Any, native_msg: Any) -> None:
        # Called inline by receive_async when a message is queued (the loop's thread), else from a client
        # thread. It must never raise: an exception on a client thread aborts the process.
        if threading.get_ident() == self._thread:
            self._settle(result, native_msg)
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits for this any more
            self._loop.call_soon_threadsafe(self._settle, result, native_msg)

    def _settle(self, result: Any, native_msg: Any) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is None:
            self._ready = (result, native_msg)  # completed inline, before receive() made a waiter
        elif not waiter.done():
            waiter.set_result((result, native_msg))


def acknowledge_now(consumer: object, raw: object) -> bool:
    """Queue an individual ack on the wrapped client consumer; False when that is not possible here.

    The client's ack-grouping tracker only queues an individual ack (it sends the group within 100 ms,
    on close, or when it grows large) and completes the async API's future at once; awaiting that future
    costs a loop round trip per message and proves nothing more. The synchronous call queues the same
    ack and raises the same errors (AlreadyClosed after close).
    """
    if type(consumer) is pa.Consumer and internals.is_wrapped_message(raw):
        internals.native_consumer(consumer).acknowledge(internals.native_message(raw))
        return True
    return False


def receive_ready(consumer: pa.Consumer, limit: int) -> list[pulsar.Message]:
    """Up to `limit` messages the client already holds for `consumer`, in order, without waiting.

    An awaited receive costs an event-loop iteration per message; taking what has already arrived in one
    go is what lets a busy loop keep up with a stream.
    """
    native = internals.native_consumer(consumer)
    schema = internals.consumer_schema(consumer)
    out: list[pulsar.Message] = []
    for _ in range(limit):
        try:
            raw = native.receive(0)
        except pulsar.Timeout:
            break
        out.append(internals.wrap_message(raw, schema))
    return out


def acknowledge_cumulative(consumer: pa.Consumer, messages: Iterable[pulsar.Message]) -> None:
    """Acknowledge each of `messages` cumulatively (it and everything before it on its partition), fire and
    forget: a lost ack only means a redelivery.

    For a consumer that owns its partitions (Exclusive or Failover); pass the last message done with per
    partition, once everything before it on that partition is done too.
    """
    native = internals.native_consumer(consumer)
    for message in messages:
        native.acknowledge_cumulative_async(internals.native_message(message), _ignore)


def _ignore(*_: Any) -> None:
    """Ack callback on a client thread: must never raise."""
