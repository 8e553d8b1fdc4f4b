"""The consume loop: Tuya topic -> decode, dedupe, map -> internal bus -> ack Tuya, pipelined and in order.

Three tasks joined by FIFO queues, so per-device order survives while sends overlap:

    receiver   receive (one long-lived receive), take an in-flight slot, decode + map (`handlers`),
               start a dedup-store lookup for backlog older than this process
    sequencer  in receive order: drop duplicates (in flight, seen window, store), start the send
    acker      in receive order: wait for the bus's confirmation, then ack Tuya, then count the key as seen

At most `max_in_flight` messages are between receipt and ack. Tuya keys by device id, so a device's messages
come from one partition in order; sends start in receive order on a KeyBased-batching producer, hence each
device's events land on the internal topic in that order.

A transient failure (a send or a dedup lookup fails) stops acking at once and closes the consumer: Pulsar
redelivers everything unacked, in order, to the new consumer. Messages whose send did succeed are counted as
seen first, so their redelivery is dropped as a duplicate (and if not, they carry the same event id).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter as Tally
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Tracer

from fleet_contracts import topics
from fleet_contracts.envelope import to_json_bytes
from fleet_ingest.adapters.dedup_store import DedupStore
from fleet_ingest.adapters.metrics import IngestMetrics
from fleet_ingest.adapters.publisher import EventSink
from fleet_ingest.adapters.tuya_consumer import Received, TuyaSource
from fleet_ingest.domain.deadletters import dead_letter_event
from fleet_ingest.domain.dedup import SeenWindow
from fleet_ingest.domain.model import DeadLetter, Project, Publish, RejectClass
from fleet_ingest.handlers import handle_delivery
from fleet_shared.tuya.codec import PushCodec

log = logging.getLogger(__name__)

#: Properties on every message ingest publishes, besides W3C `traceparent`/`tracestate`.
PROP_CONTENT_TYPE = "content-type"
PROP_TUYA_MESSAGE_ID = "tuya-message-id"
PROP_TUYA_PUBLISH_TIME = "tuya-publish-time"


@dataclass(frozen=True, kw_only=True)
class PipelineConfig:
    max_in_flight: int = 1000
    receive_batch: int = 500
    lookup_batch: int = 500
    lookup_delay_s: float = 0.002
    record_batch: int = 1000
    record_interval_s: float = 0.05
    record_backlog_limit: int = 200_000
    expire_interval_s: float = 300.0
    recovery_backoff_s: float = 0.5
    recovery_backoff_max_s: float = 30.0
    store_timeout_s: float = 10.0
    """Bound on every dedup-store call: a hung database is a transient failure, not a stall."""
    settle_timeout_s: float = 35.0
    """How long recovery waits for sends already started (just above the producer's send timeout)."""


@dataclass(slots=True)
class _Item:
    received: Received
    outcome: Publish | DeadLetter
    body: bytes = b""
    properties: dict[str, str] | None = None
    lookup: asyncio.Future[set[str]] | None = None
    future: asyncio.Future[Any] | None = None
    duplicate: bool = False
    sent_at: float = 0.0
    span: Any = None


class SendFailed(Exception):
    """A send failed: the sequencer stops starting sends so none lands after the failed one."""


class LookupBatcher:
    """Coalesces dedup-store lookups: one `$in` query per `max_batch` keys or `max_delay_s`."""

    def __init__(self, store: DedupStore, *, max_batch: int, max_delay_s: float, timeout_s: float) -> None:
        self._store = store
        self._timeout_s = timeout_s
        self._max_batch = max_batch
        self._max_delay_s = max_delay_s
        self._keys: list[str] = []
        self._future: asyncio.Future[set[str]] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def check(self, key: str) -> asyncio.Future[set[str]]:
        """A future of the set of seen keys in the batch that `key` joined."""
        if self._future is None:
            self._future = asyncio.get_running_loop().create_future()
            self._timer = asyncio.get_running_loop().call_later(self._max_delay_s, self._flush)
        future = self._future
        self._keys.append(key)
        if len(self._keys) >= self._max_batch:
            self._flush()
        return future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        keys, future = self._keys, self._future
        self._keys, self._future = [], None
        if future is None:
            return
        task = asyncio.ensure_future(self._run(keys, future))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, keys: list[str], future: asyncio.Future[set[str]]) -> None:
        try:
            async with asyncio.timeout(self._timeout_s):
                result = await self._store.seen(keys)
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
                future.exception()  # marks it retrieved: a cycle that ended no longer awaits it
            return
        if not future.done():
            future.set_result(result)


class IngestPipeline:
    def __init__(
        self,
        *,
        source: TuyaSource,
        sink: EventSink,
        store: DedupStore,
        codec: PushCodec,
        project: Project,
        metrics: IngestMetrics,
        window: SeenWindow,
        config: PipelineConfig | None = None,
        tracer: Tracer | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.source = source
        self.sink = sink
        self.store = store
        self.codec = codec
        self.project = project
        self.metrics = metrics
        self.window = window
        self.config = config or PipelineConfig()
        self.tracer = tracer
        self._monotonic = monotonic
        self._wall_ms = wall_ms
        self._started_ms = wall_ms()
        self._stopping = False
        self._stopped = asyncio.Event()
        self._finish = asyncio.Event()
        self._stop_requested = asyncio.Event()
        self._subscribed = False
        self._unsettled = 0
        self._drained = asyncio.Event()
        self._drained.set()
        self._in_flight: Tally[str] = Tally()
        self._send_failed = False
        self._to_record: list[str] = []
        self._record_wake = asyncio.Event()
        self._lookups = LookupBatcher(
            store,
            max_batch=self.config.lookup_batch,
            max_delay_s=self.config.lookup_delay_s,
            timeout_s=self.config.store_timeout_s,
        )
        self._events_topic = topics.DEVICE_EVENTS.name
        self._published_by_type: dict[str, Any] = {}
        self._decoded_by_kind: dict[str, Any] = {}

    # -- lifecycle ------------------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._subscribed and not self._stopping

    async def run(self) -> None:
        """Consume until `stop()`; a transient failure means resubscribing after a backoff, never loss."""
        recorder = asyncio.ensure_future(self._record_loop())
        backoff = self.config.recovery_backoff_s
        try:
            while not self._stopping:
                try:
                    async with asyncio.timeout(self.config.store_timeout_s):
                        await self.store.setup()
                    await self.source.subscribe()
                except Exception as exc:
                    log.warning("cannot start consuming yet: %s", exc)
                    self.metrics.recoveries.labels("subscribe").inc()
                    await self._sleep(backoff)
                    backoff = min(backoff * 2, self.config.recovery_backoff_max_s)
                    continue
                self._subscribed = True
                cause = await self._cycle()
                self._subscribed = False
                if cause is None:
                    break
                log.warning("recovering from a transient failure: %s", cause)
                self.metrics.recoveries.labels(cause).inc()
                await self._sleep(backoff)
                backoff = min(backoff * 2, self.config.recovery_backoff_max_s)
        finally:
            recorder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await recorder
            await self._flush_records()
            self._stopped.set()

    async def stop(self, grace_s: float = 15.0) -> None:
        """Stop receiving, let what is in flight be published and acked (up to `grace_s`), then close the
        consumer (what it still holds is redelivered to the next one) and return."""
        self._stopping = True
        self._stop_requested.set()
        try:
            async with asyncio.timeout(grace_s):
                await self._drained.wait()
        except TimeoutError:
            log.warning("stopping with %d messages unacked (they will be redelivered)", self._unsettled)
        self._finish.set()
        await self._stopped.wait()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stop_requested.wait()

    # -- one subscription's life ----------------------------------------------------------------------------

    async def _cycle(self) -> str | None:
        """Run the three stages until stop (None) or a failure (its cause)."""
        slots = asyncio.Semaphore(self.config.max_in_flight)
        ordered: asyncio.Queue[_Item] = asyncio.Queue()
        confirming: asyncio.Queue[_Item] = asyncio.Queue()
        tasks: dict[asyncio.Future[Any], str] = {
            asyncio.ensure_future(self._receiver(slots, ordered)): "receive",
            asyncio.ensure_future(self._sequencer(ordered, confirming)): "lookup",
            asyncio.ensure_future(self._acker(confirming, slots)): "publish",
        }
        finish = asyncio.ensure_future(self._finish.wait())
        cause: str | None = None
        pending: set[asyncio.Future[Any]] = {finish, *tasks}
        while cause is None and not finish.done():
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is finish:
                    continue
                exc = task.exception()
                if exc is not None:
                    cause = "publish" if isinstance(exc, SendFailed) else tasks[task]
                    log.warning("%s stage failed: %r", cause, exc)
                elif not self._stopping:
                    cause = tasks[task]  # a stage ended by itself: treat as a failure, resubscribe
        finish.cancel()
        # Nothing more is acked in this cycle; close the consumer so Pulsar redelivers the rest in order.
        for task in tasks:
            task.cancel()
        await self.source.close_consumer()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        await self._settle_abandoned(ordered, confirming)
        return cause

    async def _settle_abandoned(
        self, ordered: asyncio.Queue[_Item], confirming: asyncio.Queue[_Item]
    ) -> None:
        """Sends already started may still succeed: count those as seen (their redelivery is a duplicate)."""
        started: list[_Item] = []
        while not confirming.empty():
            started.append(confirming.get_nowait())
        futures = [i.future for i in started if i.future is not None]
        if futures:
            await asyncio.wait(futures, timeout=self.config.settle_timeout_s)
        now = self._monotonic()
        for item in started:
            f = item.future
            if isinstance(item.outcome, Publish) and f is not None:
                key = item.outcome.dedup_key
                if f.done() and not f.cancelled() and f.exception() is None:
                    self.window.add(key, now)
                    self._to_record.append(key)
                self._release_in_flight(key)
            self._end_span(item, error="abandoned")
        dropped = ordered.qsize() + len(started)
        while not ordered.empty():
            self._end_span(ordered.get_nowait(), error="abandoned")
        self._in_flight.clear()
        self._unsettled = 0
        self._drained.set()
        self.metrics.in_flight.set(0)
        if dropped:
            log.info("left %d messages unacked for redelivery", dropped)

    # -- stages ---------------------------------------------------------------------------------------------

    async def _receiver(self, slots: asyncio.Semaphore, ordered: asyncio.Queue[_Item]) -> None:
        source, metrics = self.source, self.metrics
        while True:
            await slots.acquire()
            if self._stopping:
                return
            received = await source.receive()
            if self._stopping:
                return  # left unacked: closing the consumer hands it to the next one
            batch = [received]
            # Take what has already arrived too (one slot each), instead of a loop iteration per message.
            while not slots.locked() and len(batch) < self.config.receive_batch:
                more = source.receive_ready(min(slots._value, self.config.receive_batch - len(batch)))
                if not more:
                    break
                for _ in more:
                    await slots.acquire()  # free slots: returns at once
                batch.extend(more)
            self._unsettled += len(batch)
            self._drained.clear()
            metrics.in_flight.inc(len(batch))
            for one in batch:
                ordered.put_nowait(self._prepare(one))

    def _prepare(self, received: Received) -> _Item:
        delivery = received.delivery
        metrics = self.metrics
        metrics.received.inc()
        lag = (
            max(0.0, (self._wall_ms() - delivery.publish_time_ms) / 1000) if delivery.publish_time_ms else 0.0
        )
        metrics.lag.observe(lag)
        metrics.lag_last.set(lag)
        span = self._start_consume_span(delivery.properties, delivery.topic, delivery.message_id)
        outcome = handle_delivery(delivery, self.codec, self.project)
        item = _Item(received, outcome, span=span)
        if isinstance(outcome, Publish):
            self._count_decoded(outcome.kind)
            item.body = to_json_bytes(outcome.event)
            item.properties = {
                PROP_CONTENT_TYPE: "application/json",
                PROP_TUYA_MESSAGE_ID: delivery.message_id,
                PROP_TUYA_PUBLISH_TIME: str(delivery.publish_time_ms),
            }
            # Backlog from before this process started may have been published by a previous one.
            if delivery.publish_time_ms < self._started_ms and outcome.dedup_key not in self.window:
                item.lookup = self._lookups.check(outcome.dedup_key)
        else:
            if outcome.reason is RejectClass.CONTRACT:
                self._count_decoded("contract_violation")
            dead = dead_letter_event(
                delivery, outcome, project=self.project, subscription=self.source.subscription
            )
            item.body = to_json_bytes(dead)
            item.properties = {
                PROP_CONTENT_TYPE: "application/json",
                PROP_TUYA_MESSAGE_ID: delivery.message_id,
            }
            log.warning(
                "dead-lettering a Tuya message",
                extra={
                    "message_id": delivery.message_id,
                    "reason": outcome.reason.value,
                    "detail": outcome.detail,
                },
            )
        return item

    async def _sequencer(self, ordered: asyncio.Queue[_Item], confirming: asyncio.Queue[_Item]) -> None:
        sink, window, in_flight, metrics = self.sink, self.window, self._in_flight, self.metrics
        self._send_failed = False
        while True:
            item = await ordered.get()
            if self._send_failed:
                ordered.put_nowait(item)  # (the queue is dropped by the recovery anyway)
                raise SendFailed
            outcome = item.outcome
            if isinstance(outcome, Publish):
                key = outcome.dedup_key
                seen_in_store = False
                if item.lookup is not None:
                    seen_in_store = key in await item.lookup
                now = self._monotonic()
                if in_flight[key]:
                    item.duplicate = True
                    metrics.duplicates.labels("in_flight").inc()
                elif window.contains(key, now):
                    item.duplicate = True
                    metrics.duplicates.labels("window").inc()
                elif seen_in_store:
                    item.duplicate = True
                    metrics.duplicates.labels("store").inc()
                    window.add(key, now)
                else:
                    in_flight[key] += 1
                    properties = item.properties or {}
                    self._inject_publish_span(item, properties)
                    item.sent_at = now
                    item.future = sink.send_event(item.body, outcome.key, properties)
            else:
                item.future = sink.send_dead_letter(
                    item.body, item.received.delivery.message_id, item.properties or {}
                )
            if item.future is not None:
                if item.future.done():
                    self._on_sent(item.future)
                else:
                    item.future.add_done_callback(self._on_sent)
            confirming.put_nowait(item)

    def _on_sent(self, future: asyncio.Future[Any]) -> None:
        # Pulsar fails every pending send behind a failed one; this closes the gap of sends started
        # between the failure and the acker seeing it.
        if not future.cancelled() and future.exception() is not None:
            self._send_failed = True

    async def _acker(self, confirming: asyncio.Queue[_Item], slots: asyncio.Semaphore) -> None:
        source, metrics, window = self.source, self.metrics, self.window
        while True:
            item = await confirming.get()
            future = item.future
            if future is not None:
                try:
                    await future
                except BaseException:
                    # Put it back so the recovery sees it (and every later item) as started-but-unconfirmed.
                    self._requeue_front(confirming, item)
                    raise
            source.acknowledge(item.received)
            outcome = item.outcome
            if isinstance(outcome, Publish):
                if future is not None:
                    now = self._monotonic()
                    metrics.publish_latency.observe(now - item.sent_at)
                    self._count_published(outcome.event.type)
                    window.add(outcome.dedup_key, now)
                    self._release_in_flight(outcome.dedup_key)
                    self._to_record.append(outcome.dedup_key)
                    if len(self._to_record) >= self.config.record_batch:
                        self._record_wake.set()
            else:
                metrics.rejected_by_reason[outcome.reason].inc()
            self._end_span(item)
            self._unsettled -= 1
            metrics.in_flight.dec()
            if self._unsettled == 0:
                self._drained.set()
            slots.release()

    @staticmethod
    def _requeue_front(queue: asyncio.Queue[_Item], item: _Item) -> None:
        rest: list[_Item] = []
        while not queue.empty():
            rest.append(queue.get_nowait())
        queue.put_nowait(item)
        for other in rest:
            queue.put_nowait(other)

    def _release_in_flight(self, key: str) -> None:
        count = self._in_flight[key] - 1
        if count > 0:
            self._in_flight[key] = count
        else:
            self._in_flight.pop(key, None)

    # -- dedup store writes ---------------------------------------------------------------------------------

    async def _record_loop(self) -> None:
        next_expiry = self._monotonic() + self.config.expire_interval_s
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.record_interval_s):
                    await self._record_wake.wait()
            self._record_wake.clear()
            await self._flush_records()
            if self._monotonic() >= next_expiry:
                next_expiry = self._monotonic() + self.config.expire_interval_s
                try:
                    async with asyncio.timeout(self.config.store_timeout_s):
                        await self.store.expire()
                except Exception as exc:
                    log.warning("expiring seen messages failed: %s", exc)

    async def _flush_records(self) -> None:
        while self._to_record:
            batch = self._to_record[: self.config.record_batch]
            try:
                async with asyncio.timeout(self.config.store_timeout_s):
                    await self.store.record(batch)
            except Exception as exc:
                self.metrics.store_errors.inc()
                log.warning("recording seen messages failed (will retry): %s", exc)
                overflow = len(self._to_record) - self.config.record_backlog_limit
                if overflow > 0:  # the window still dedupes them; consumers dedupe by event id
                    del self._to_record[:overflow]
                return
            del self._to_record[: len(batch)]

    # -- metrics and tracing --------------------------------------------------------------------------------

    def _count_decoded(self, kind: str) -> None:
        counter = self._decoded_by_kind.get(kind)
        if counter is None:
            counter = self._decoded_by_kind[kind] = self.metrics.decoded.labels(kind)
        counter.inc()

    def _count_published(self, event_type: str) -> None:
        counter = self._published_by_type.get(event_type)
        if counter is None:
            counter = self._published_by_type[event_type] = self.metrics.published.labels(event_type)
        counter.inc()

    def _start_consume_span(self, properties: Any, topic: str, message_id: str) -> Any:
        if self.tracer is None:
            return None
        parent = propagate.extract(properties)
        return self.tracer.start_span(
            f"{topic} process",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "pulsar",
                "messaging.destination.name": topic,
                "messaging.message.id": message_id,
                "messaging.pulsar.subscription": self.source.subscription,
            },
        )

    def _inject_publish_span(self, item: _Item, properties: dict[str, str]) -> None:
        if self.tracer is None or item.span is None:
            return
        outcome = item.outcome
        assert isinstance(outcome, Publish)
        ctx = trace.set_span_in_context(item.span)
        publish = self.tracer.start_span(
            f"{self._events_topic} publish",
            context=ctx,
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "pulsar",
                "messaging.destination.name": self._events_topic,
                "messaging.message.id": outcome.event.id,
                "messaging.pulsar.message.key": outcome.key or "",
                "cloudevents.event_type": outcome.event.type,
            },
        )
        propagate.inject(properties, context=trace.set_span_in_context(publish))
        item.span = (item.span, publish)

    def _end_span(self, item: _Item, error: str | None = None) -> None:
        span = item.span
        if span is None:
            return
        spans = span if isinstance(span, tuple) else (span,)
        for s in reversed(spans):
            if error:
                s.set_attribute("ingest.outcome", error)
            elif item.duplicate:
                s.set_attribute("ingest.outcome", "duplicate")
            s.end()
        item.span = None
