"""The broker's one producer object: a cached Pulsar producer per topic, bounded and confirmed sends."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import pulsar
from faststream._internal.endpoint.utils import ParserComposition
from faststream._internal.producer import ProducerProto
from faststream.exceptions import FeatureNotSupportedException, IncorrectState
from pulsar.asyncio import PulsarException
from typing_extensions import override

from . import internals
from .codec import OrjsonCodec, encode_body
from .confirmed import Confirmations, ConfirmedSender, WakeOnce
from .message import PulsarParser, PulsarPublishCommand
from .options import ProducerOptions
from .rpc import ReplyInbox

if TYPE_CHECKING:
    from fast_depends.library.serializer import SerializerProto
    from faststream._internal.parser import CodecProto
    from faststream._internal.types import CustomCallable
    from pulsar import asyncio as pa

    from .metrics import BusMetrics, TopicMetrics

log = logging.getLogger(__name__)

_OK = pulsar.Result.Ok


class _Slots:
    """A semaphore whose free slot is taken without a coroutine: what nearly every send finds.

    `asyncio.Semaphore` costs three coroutines per `async with` (and scans its waiters to say whether it is
    locked); a send that does not have to wait needs none. Waiters are served first come, first served:
    a released slot goes straight to the oldest, and `take` fails while anyone waits.
    """

    __slots__ = ("_free", "_waiters")

    def __init__(self, size: int) -> None:
        self._free = size
        self._waiters: deque[asyncio.Future[None]] = deque()

    def take(self) -> bool:
        """A slot now, if one is free and nobody waits for one."""
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return True
        return False

    async def wait(self) -> None:
        """Until the slot released to this caller, in turn."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot while being cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot goes to it as it is
                return
        self._free += 1


class _SendResults:
    """Completes send futures from the client's thread, waking the event loop once per burst of results.

    `pulsar.asyncio.Producer.send` completes every send through its own `call_soon_threadsafe`: a handle
    made and run on the loop per message. The broker persists a batch (up to 1,000 messages) at once, so its
    confirmations come in bursts: here the client's thread queues each result and asks for a wake-up only
    while none is pending, and the loop completes every queued future in order, each with what that
    `send` would have returned or raised. Made inside the running loop it wakes.
    """

    __slots__ = ("_loop", "_results", "_wake")

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._results: deque[tuple[asyncio.Future[pulsar.MessageId], Any, Any]] = deque()
        self._wake = WakeOnce(self._complete)

    def send(self, native_producer: Any, message: Any) -> asyncio.Future[pulsar.MessageId]:
        """Queue `message` in the client now; the future completes once the broker answered."""
        future: asyncio.Future[pulsar.MessageId] = self._loop.create_future()
        native_producer.send_async(message, partial(self._sent, future))
        return future

    def _sent(self, future: asyncio.Future[pulsar.MessageId], result: Any, message_id: Any) -> None:
        # On a client thread (or inline, on the loop's): must never raise.
        self._results.append((future, result, message_id))
        self._wake.request()

    def _complete(self) -> None:
        results = self._results
        while results:
            future, result, message_id = results.popleft()
            if future.done():  # its publisher was cancelled meanwhile
                continue
            if result == _OK:
                future.set_result(internals.sent_message_id(message_id))
            else:
                future.set_exception(PulsarException(result))


@dataclass(slots=True)
class _TopicProducer:
    producer: pa.Producer
    # Bounds sends in flight to what the client queue holds, so none fails with ProducerQueueIsFull.
    in_flight: _Slots
    flusher: _BatchFlusher | None = None
    native: Any = None  # the client's own producer, when `pulsar.asyncio` lets it be reached
    results: _SendResults | None = None
    metrics: TopicMetrics | None = None

    def send(
        self, cmd: PulsarPublishCommand, body: bytes, content_type: str | None
    ) -> Awaitable[pulsar.MessageId]:
        """The send, queued in the client at once; awaited, it waits for the broker."""
        if self.flusher is not None:
            self.flusher.message_added()
        properties = cmd.properties(content_type)
        if self.results is not None and type(body) is bytes:
            # What `self.producer.send(...)` below does, with one loop wake-up per burst of confirmations.
            message = internals.producer_message(
                body, properties, cmd.key, cmd.ordering_key, cmd.event_time, cmd.deliver_after
            )
            return self.results.send(self.native, message)
        sent: Coroutine[Any, Any, pulsar.MessageId] = self.producer.send(
            body,
            properties=properties,
            partition_key=cmd.key,
            ordering_key=cmd.ordering_key,
            event_timestamp=cmd.event_time,
            deliver_after=cmd.deliver_after,
        )
        return sent


@dataclass(slots=True)
class _Gate:
    """Sends to a topic whose producer is not ready yet, in call order."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    waiting: int = 0


class _BatchFlusher:
    """Sends a KeyBased producer's open batches at most about `delay` seconds after their first message.

    The C++ client restarts its batch timer whenever a KeyBased batch gets the first message of a *key*.
    With more keys than messages per delay (1,000 devices at a few thousand events/s) the timer is
    pushed back before it can fire, so batches only go out when the container is full (1,000 messages
    or 128 KiB): after 500 ms at 2,000 msg/s, seconds at lower rates. This timer starts at the first
    message after a flush and is never pushed back.

    The flush runs on a worker thread through the client's blocking `flush()`, which releases the GIL
    around the C++ call: `flush_async` keeps the GIL while it waits for the producer's lock, and a
    client thread holding that lock while it waits for the GIL to run a send callback deadlocks both
    (reproduced twice in three bench runs). `flush()` returns once the flushed messages are persisted;
    one flush runs at a time per producer, and messages added meanwhile are flushed as soon as it
    returns if their delay has passed (so a Pulsar outage ties up one thread per producer, no more).
    """

    __slots__ = ("_busy", "_delay", "_executor", "_native", "_pending_since", "_timer")

    def __init__(self, native: Any, delay: float, executor: ThreadPoolExecutor) -> None:
        self._native = native
        self._delay = delay
        self._executor = executor
        self._timer: asyncio.TimerHandle | None = None
        self._busy = False
        self._pending_since: float | None = None

    def message_added(self) -> None:
        if self._busy:
            if self._pending_since is None:
                self._pending_since = asyncio.get_running_loop().time()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._delay, self._flush)

    def _flush(self) -> None:
        self._timer = None
        self._busy = True
        try:
            future = asyncio.get_running_loop().run_in_executor(self._executor, self._flush_blocking)
        except RuntimeError:  # the executor is shut down: the producer is closing
            self._busy = False
            return
        future.add_done_callback(self._flushed)

    def _flush_blocking(self) -> None:
        with contextlib.suppress(Exception):  # closed or disconnected: the client resends on reconnect
            self._native.flush()

    def _flushed(self, _done: object) -> None:
        self._busy = False
        if self._pending_since is not None:
            when, self._pending_since = self._pending_since + self._delay, None
            self._timer = asyncio.get_running_loop().call_at(when, self._flush)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class PulsarProducer(ProducerProto[PulsarPublishCommand]):
    """Publishes commands; each send is awaited until the broker has persisted the message."""

    def __init__(
        self,
        *,
        parser: CustomCallable | None = None,
        decoder: CustomCallable | None = None,
        default_options: ProducerOptions | None = None,
        reply_topic: str,
        metrics: BusMetrics | None = None,
    ) -> None:
        default = PulsarParser(settler=None)
        self._parser = ParserComposition(parser, default.parse_message)
        self._decoder = ParserComposition(decoder, default.decode_message)
        self.codec: CodecProto = OrjsonCodec()
        self.serializer: SerializerProto | None = None
        self.default_options = default_options or ProducerOptions()
        self.reply_topic = reply_topic
        self._client: pa.Client | None = None
        self._topics: dict[str, _TopicProducer] = {}
        self._first_sends: dict[str, _Gate] = {}
        self._inbox_lock = asyncio.Lock()
        self._inbox: ReplyInbox | None = None
        self._flush_executor: ThreadPoolExecutor | None = None
        self._senders: list[ConfirmedSender] = []
        self._results: _SendResults | None = None
        self._metrics = metrics

    def connect(
        self, client: pa.Client, serializer: SerializerProto | None, codec: CodecProto | None
    ) -> None:
        self._client = client
        self.serializer = serializer
        self.codec = codec or OrjsonCodec()

    @property
    def client(self) -> pa.Client:
        if self._client is None:
            raise IncorrectState("PulsarBroker is not connected: call `await broker.connect()` first")
        return self._client

    def is_connected(self) -> bool | None:
        """Whether the cached producers are connected; None when there are none to ask."""
        if not self._topics:
            return None
        return all(t.producer.is_connected() for t in self._topics.values())

    @override
    async def publish(self, cmd: PulsarPublishCommand) -> pulsar.MessageId:
        if type(self.codec) is OrjsonCodec:
            body, content_type = encode_body(cmd.body)  # what its encode() returns, without a coroutine
        else:
            body, content_type = await self.codec.encode(cmd.body, self.serializer)
        topic = cmd.destination
        target = self._topics.get(topic)
        if target is None or topic in self._first_sends:
            # The producer is being created, or sends made meanwhile are still being handed over.
            return await self._send_first(topic, cmd, body, content_type)
        slots = target.in_flight
        if not slots.take():
            await slots.wait()
        metrics = target.metrics
        if metrics is None:
            try:
                return await target.send(cmd, body, content_type)
            finally:
                slots.release()
        began = time.perf_counter()
        try:
            message_id = await target.send(cmd, body, content_type)
        except Exception:
            metrics.failures.inc()
            raise
        finally:
            slots.release()
        metrics.seconds.observe(time.perf_counter() - began)
        metrics.sent.inc()
        return message_id

    @override
    async def request(self, cmd: PulsarPublishCommand) -> pulsar.Message:
        inbox = await self._reply_inbox()
        cmd.reply_to = inbox.topic
        correlation_id = cmd.correlation_id or ""
        if not correlation_id:
            raise ValueError("a request needs a correlation id")
        waiter = inbox.expect(correlation_id)
        try:
            await self.publish(cmd)
            async with asyncio.timeout(cmd.timeout or 30.0):
                return await waiter
        finally:
            inbox.forget(correlation_id)

    @override
    async def publish_batch(self, cmd: PulsarPublishCommand) -> None:
        # Pulsar batches on the producer side already (see ProducerOptions); an explicit batch adds nothing.
        raise FeatureNotSupportedException("Pulsar batches sends itself: publish messages one by one")

    async def confirmed_sender(
        self, topic: str, confirmations: Confirmations, options: ProducerOptions | None = None
    ) -> ConfirmedSender:
        """A producer of its own for `topic` whose sends are started now and confirmed through tickets.

        For a caller that pipelines sends and settles them in order (see `confirmed`); it is closed with
        this producer unless closed before.
        """
        chosen = options or self.default_options
        producer = await self.client.create_producer(topic, **chosen.as_kwargs())
        metrics = None if self._metrics is None else self._metrics.topic(topic)
        sender = ConfirmedSender(producer, confirmations, self._flusher(producer, chosen), metrics)
        self._senders.append(sender)
        return sender

    async def close(self) -> None:
        """Flush and close every producer and the reply inbox; errors are logged so all get closed."""
        senders, self._senders = self._senders, []
        for sender in senders:
            await sender.close()
        topics, self._topics = self._topics, {}
        for name, target in topics.items():
            if target.flusher is not None:
                target.flusher.stop()
            with contextlib.suppress(PulsarException):
                await target.producer.flush()
            try:
                await target.producer.close()
            except PulsarException as e:
                log.warning("closing the producer of %s failed: %s", name, e)
        if self._inbox is not None:
            inbox, self._inbox = self._inbox, None
            await inbox.close()
        if self._flush_executor is not None:
            executor, self._flush_executor = self._flush_executor, None
            executor.shutdown(wait=False)
        self._results = None  # made again in the loop of the next connection
        self._client = None

    async def _send_first(
        self, topic: str, cmd: PulsarPublishCommand, body: bytes, content_type: str | None
    ) -> pulsar.MessageId:
        """A send while the topic's producer is created (`_send_in_turn`), counted in the topic's metrics."""
        metrics = None if self._metrics is None else self._metrics.topic(topic)
        began = time.perf_counter()
        try:
            message_id = await self._send_in_turn(topic, cmd, body, content_type)
        except Exception:
            if metrics is not None:
                metrics.failures.inc()
            raise
        if metrics is not None:
            metrics.seconds.observe(time.perf_counter() - began)
            metrics.sent.inc()
        return message_id

    async def _send_in_turn(
        self, topic: str, cmd: PulsarPublishCommand, body: bytes, content_type: str | None
    ) -> pulsar.MessageId:
        """A send while the topic's producer is created: one creation, sends handed over in call order.

        Senders queue on the topic's gate (an asyncio.Lock, first come first served, no overtaking); the
        first creates the producer. Each starts its send and lets it reach the client's queue before
        passing the gate on, and later senders take the fast path only once the gate is empty, so a send
        made after another never reaches Pulsar before it.
        """
        gate = self._first_sends.get(topic)
        if gate is None:
            gate = self._first_sends[topic] = _Gate()
        gate.waiting += 1
        try:
            async with gate.lock:
                target = self._topics.get(topic) or await self._create(topic, cmd.producer_options)
                if not target.in_flight.take():
                    await target.in_flight.wait()
                sent = asyncio.ensure_future(target.send(cmd, body, content_type))
                sent.add_done_callback(lambda _: target.in_flight.release())
                # Scheduled before this task's wake-up: the send is queued in the client on return.
                await asyncio.sleep(0)
        finally:
            gate.waiting -= 1
            if gate.waiting == 0 and self._first_sends.get(topic) is gate:
                del self._first_sends[topic]
        return await sent

    async def _create(self, topic: str, options: ProducerOptions | None) -> _TopicProducer:
        chosen = options or self.default_options
        producer = await self.client.create_producer(topic, **chosen.as_kwargs())
        native = internals.native_producer(producer)
        if native is not None and self._results is None:
            self._results = _SendResults()
        target = self._topics[topic] = _TopicProducer(
            producer,
            _Slots(chosen.max_pending_messages),
            self._flusher(producer, chosen),
            native,
            self._results if native is not None else None,
            None if self._metrics is None else self._metrics.topic(topic),
        )
        return target

    def _flusher(self, producer: pa.Producer, options: ProducerOptions) -> _BatchFlusher | None:
        native = internals.native_producer(producer)
        key_based = options.batching and options.batching_type == pulsar.BatchingType.KeyBased
        if not key_based or native is None:
            return None
        if self._flush_executor is None:
            self._flush_executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="pulsar-flush")
        return _BatchFlusher(native, options.batching_max_publish_delay_ms / 1000, self._flush_executor)

    async def _reply_inbox(self) -> ReplyInbox:
        async with self._inbox_lock:
            if self._inbox is None:
                inbox = ReplyInbox(self.client, self.reply_topic)
                await inbox.start()
                self._inbox = inbox
            return self._inbox
