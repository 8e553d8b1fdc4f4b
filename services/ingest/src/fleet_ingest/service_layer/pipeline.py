"""The consume loop: Tuya topic -> decode, dedupe, map -> internal bus -> ack Tuya, pipelined and in order.

Four tasks joined by FIFO queues of batches, so per-device order survives while sends overlap:

    receiver   one long-lived receive plus whatever has already arrived (one in-flight slot each), through the
               handover guard (`handover`: a partition new to this consumer is held back until the broker's
               rewind could have come), decode + map (`handlers`), one dedup-store lookup per batch for the
               keys the seen window misses (`lookups`)
    releaser   passes on what the handover guard held once its hold ends
    sequencer  in receive order: drop duplicates (`dedup`: in flight, seen window, store), start the sends
    acker      in receive order: wait for the bus's confirmations, then ack each message on Tuya's topic
               (individually: a cumulative ack also covers messages a handover delivered to nobody yet),
               then count the keys as seen (`recorder`)

Everything per message is plain Python on already-decoded data; loop wake-ups, metrics, trace spans and acks
happen per batch, because at thousands of messages a second those per-message costs dominated.

At most `max_in_flight` messages are between receipt and ack. Tuya keys by device id, so a device's messages
come from one partition in order; sends start in receive order on a KeyBased-batching producer, hence each
device's events land on the internal topic in that order. Across a handover of a partition between replicas
the guard keeps that order (see `handover`).

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

from fleet_ingest.domain.dedup import SeenWindow
from fleet_ingest.domain.model import Project, Publish, RejectClass
from fleet_ingest.ports import (
    DedupStore,
    EventSink,
    HandoverProbe,
    MessageTrace,
    Metrics,
    Received,
    Tracing,
    TuyaSource,
)
from fleet_ingest.service_layer.dedup import duplicate_source
from fleet_ingest.service_layer.flow import Batch, Item, SendFailed, Slots, confirmed_run
from fleet_ingest.service_layer.handlers import handle_delivery
from fleet_ingest.service_layer.handover import HandoverGuard, Position
from fleet_ingest.service_layer.lookups import LookupBatcher
from fleet_ingest.service_layer.messages import dead_letter_message, event_message
from fleet_ingest.service_layer.recorder import SeenRecorder
from fleet_shared.tuya.codec import PushCodec

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class PipelineConfig:
    max_in_flight: int = 4000
    receive_batch: int = 500
    lookup_batch: int = 5000
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
    handover_hold_s: float = 2.0
    """How long a partition new to this consumer is held back: above the broker's
    `activeConsumerFailoverDelayTimeMillis` (1 s by default), after which it rewinds on a handover."""
    handover_probe_interval_s: float = 0.25
    """How often the broker is asked, during a hold, whether the hold is needed (with a `HandoverProbe`)."""


class IngestPipeline:
    def __init__(
        self,
        *,
        source: TuyaSource,
        sink: EventSink,
        store: DedupStore,
        codec: PushCodec,
        project: Project,
        metrics: Metrics,
        window: SeenWindow,
        config: PipelineConfig | None = None,
        tracing: Tracing | None = None,
        probe: HandoverProbe | None = None,
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
        self.tracing = tracing
        self.probe = probe
        self._probes: set[asyncio.Future[None]] = set()
        self._monotonic = monotonic
        self._wall_ms = wall_ms
        self._stopping = False
        self._stopped = asyncio.Event()
        self._finish = asyncio.Event()
        self._stop_requested = asyncio.Event()
        self._subscribed = False
        self._unsettled = 0
        self._drained = asyncio.Event()
        self._drained.set()
        self._in_flight: Tally[str] = Tally()
        self._acking: list[Item] = []
        self._guard = HandoverGuard(self.config.handover_hold_s)
        self._holding = asyncio.Event()
        self._recorder = SeenRecorder(
            store,
            metrics.store_errors,
            batch=self.config.record_batch,
            interval_s=self.config.record_interval_s,
            backlog_limit=self.config.record_backlog_limit,
            expire_interval_s=self.config.expire_interval_s,
            timeout_s=self.config.store_timeout_s,
            monotonic=monotonic,
        )
        self._lookups = LookupBatcher(
            store,
            max_batch=self.config.lookup_batch,
            timeout_s=self.config.store_timeout_s,
        )

    # -- lifecycle ------------------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._subscribed and not self._stopping

    async def run(self) -> None:
        """Consume until `stop()`; a transient failure means resubscribing after a backoff, never loss."""
        recorder = asyncio.ensure_future(self._recorder.run())
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
            await self._recorder.flush()
            self._stopped.set()

    def stop_receiving(self) -> None:
        """Take no new messages (what is in flight goes on); `stop` finishes the job."""
        self._stopping = True
        self._stop_requested.set()

    async def stop(self, grace_s: float = 15.0) -> None:
        """Stop receiving, let what is in flight be published and acked (up to `grace_s`), then close the
        consumer (what it still holds is redelivered to the next one) and return."""
        self.stop_receiving()
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
        slots = Slots(self.config.max_in_flight)
        ordered: asyncio.Queue[Batch] = asyncio.Queue()
        confirming: asyncio.Queue[Batch] = asyncio.Queue()
        self._acking = []
        self._guard = HandoverGuard(self.config.handover_hold_s)  # a new consumer: every partition is new
        tasks: dict[asyncio.Future[Any], str] = {
            asyncio.ensure_future(self._receiver(slots, ordered)): "receive",
            asyncio.ensure_future(self._releaser(ordered)): "receive",
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
        for task in [*tasks, *self._probes]:
            task.cancel()
        await self.source.close_consumer()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        await self._settle_abandoned(ordered, confirming)
        return cause

    async def _settle_abandoned(
        self, ordered: asyncio.Queue[Batch], confirming: asyncio.Queue[Batch]
    ) -> None:
        """Sends already started may still succeed: count those as seen (their redelivery is a duplicate)."""
        started = list(self._acking)
        while not confirming.empty():
            started.extend(confirming.get_nowait().items)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.config.settle_timeout_s):
                for one in started:
                    if one.send is not None:
                        await self.sink.confirmations.wait(one.send)
        now = self._monotonic()
        for item in started:
            send = item.send
            if isinstance(item.outcome, Publish) and send is not None:
                key = item.outcome.dedup_key
                if send.done and send.error is None:
                    self.window.add(key, now)
                    self._recorder.add(key)
                self._release_in_flight(key)
            if item.trace is not None:
                item.trace.settle("abandoned")
        dropped = len(started) + self._guard.held
        while not ordered.empty():
            for item in ordered.get_nowait().items:
                dropped += 1
                if item.trace is not None:
                    item.trace.settle("abandoned")
        self._acking = []
        self._in_flight.clear()
        self._unsettled = 0
        self._drained.set()
        self.metrics.in_flight.set(0)
        if dropped:
            log.info("left %d messages unacked for redelivery", dropped)

    # -- stages ---------------------------------------------------------------------------------------------

    async def _receiver(self, slots: Slots, ordered: asyncio.Queue[Batch]) -> None:
        source = self.source
        limit = self.config.receive_batch
        while True:
            await slots.wait()
            if self._stopping:
                return
            received = await source.receive()  # one long-lived receive: never cancelled mid-way
            slots.take(1)
            if self._stopping:
                return  # left unacked: closing the consumer hands it to the next one
            batch = [received]
            # Take what has already arrived too, instead of a loop iteration per message.
            wanted = slots.take(limit - 1)
            if wanted:
                more = source.receive_ready(wanted)
                slots.release(wanted - len(more))
                batch.extend(more)
            admitted = self._guard.admit(batch, self._monotonic())
            if admitted.holds:
                self.metrics.handover_holds.inc(len(admitted.holds))
                self._holding.set()
                if self.probe is not None:
                    for partition, first in admitted.holds:
                        probing = asyncio.ensure_future(self._end_hold_if_settled(partition, first, ordered))
                        self._probes.add(probing)
                        probing.add_done_callback(self._probes.discard)
            if admitted.dropped:
                # the broker rewound a partition handed over to us: these come again, in order
                slots.release(len(admitted.dropped))
                self.metrics.handover_dropped.inc(len(admitted.dropped))
                log.info("dropped %d messages a handover delivered early", len(admitted.dropped))
            if admitted.released:
                self._enqueue(admitted.released, ordered)

    async def _releaser(self, ordered: asyncio.Queue[Batch]) -> None:
        """Passes on what the handover guard held once its hold ends (the receiver may be waiting for a
        message meanwhile; when one comes it releases what is due itself)."""
        guard = self._guard
        while True:
            due = guard.next_release()
            if due is None or self._stopping:  # stopping: what is held stays unacked, for the next consumer
                self._holding.clear()
                await self._holding.wait()
                continue
            delay = due - self._monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
                continue
            released = guard.release_due(self._monotonic())
            if released:
                self._enqueue(released, ordered)

    async def _end_hold_if_settled(
        self, partition: str, first: Position, ordered: asyncio.Queue[Batch]
    ) -> None:
        """Ask the broker, while `partition` is held from `first`, whether anything before it is still
        unacknowledged; once nothing is, the hold is not needed: pass on what it held. On any doubt (the
        broker cannot say, a rewind ended the hold, it ended by itself) the hold runs its course."""
        guard, probe = self._guard, self.probe
        assert probe is not None
        while guard.held_from(partition) == first and not self._stopping:
            try:
                async with asyncio.timeout(self.config.handover_hold_s):
                    settled = await probe.settled(partition, first)
            except Exception as exc:
                log.info("cannot ask the broker about %s, holding it: %r", partition, exc)
                return
            if settled:
                if guard.held_from(partition) == first:
                    self.metrics.handover_holds_ended.inc()
                    self._enqueue(guard.end_hold(partition), ordered)
                return
            await asyncio.sleep(self.config.handover_probe_interval_s)

    def _enqueue(self, batch: list[Received], ordered: asyncio.Queue[Batch]) -> None:
        self._unsettled += len(batch)
        self._drained.clear()
        ordered.put_nowait(self._prepare(batch))

    def _prepare(self, batch: list[Received]) -> Batch:
        """Decode and map a batch: the CPU-bound part, with metrics and traces per batch, not per message."""
        metrics = self.metrics
        received_at = self._monotonic()
        count = len(batch)
        metrics.received.inc(count)
        metrics.in_flight.inc(count)
        oldest = batch[0].delivery.publish_time_ms
        lag = max(0.0, (self._wall_ms() - oldest) / 1000) if oldest else 0.0
        metrics.lag.observe(lag)
        metrics.lag_last.set(lag)
        shared = self.tracing.for_batch(batch) if self.tracing is not None else None
        kinds: Tally[str] = Tally()
        lookups: list[str] = []
        items = []
        for received in batch:
            item = self._prepare_one(received, shared)
            outcome = item.outcome
            if isinstance(outcome, Publish):
                kinds[outcome.kind] += 1
                # Whatever the seen window does not know may have been published by a previous process:
                # backlog from before this one started, and just as well a Tuya re-push arriving after a
                # restart. One batched store lookup covers them all (the sequencer awaits it in order).
                # On MongoDB that is an `_id` index lookup per key; on FerretDB (dev stack) every lookup
                # scans the collection, which bounds throughput there (bench/ingest.py, 1,000 devices,
                # 20,000 messages: live 3,745 msg/s when only backlog was looked up, 823 msg/s now).
                if outcome.dedup_key not in self.window:
                    lookups.append(outcome.dedup_key)
            elif outcome.reason is RejectClass.CONTRACT:
                kinds["contract_violation"] += 1
            items.append(item)
        for kind, n in kinds.items():
            metrics.count_decoded(kind, n)
        lookup = self._lookups.check(list(dict.fromkeys(lookups))) if lookups else None
        return Batch(items, lookup, received_at=received_at)

    def _prepare_one(self, received: Received, shared: MessageTrace | None) -> Item:
        delivery = received.delivery
        outcome = handle_delivery(delivery, self.codec, self.project)
        trace = shared
        if self.tracing is not None:
            trace = self.tracing.continued(delivery.properties) or shared  # the producer's own trace
        item = Item(received, outcome, trace)
        if isinstance(outcome, Publish):
            item.body, item.properties = event_message(
                outcome, delivery, trace.carrier if trace is not None else None
            )
        else:
            item.body, item.properties = dead_letter_message(
                outcome, delivery, project=self.project, subscription=self.source.subscription
            )
        return item

    async def _sequencer(self, ordered: asyncio.Queue[Batch], confirming: asyncio.Queue[Batch]) -> None:
        sink, window, in_flight, metrics = self.sink, self.window, self._in_flight, self.metrics
        confirmations = sink.confirmations
        failures = confirmations.failures
        while True:
            batch = await ordered.get()
            # Pulsar fails every pending send behind a failed one: start none after a failure.
            if confirmations.failures != failures:
                ordered.put_nowait(batch)  # (the queue is dropped by the recovery anyway)
                raise SendFailed
            seen_in_store = await batch.lookup if batch.lookup is not None else set()
            now = self._monotonic()
            batch.sent_at = now
            metrics.sequencing_delay.observe(now - batch.received_at)
            for item in batch.items:
                if confirmations.failures != failures:
                    confirming.put_nowait(batch)  # what did start is settled by the recovery
                    raise SendFailed
                outcome = item.outcome
                if isinstance(outcome, Publish):
                    key = outcome.dedup_key
                    source = duplicate_source(
                        key, in_flight=in_flight, window=window, seen_in_store=seen_in_store, now=now
                    )
                    if source is not None:
                        item.duplicate = True
                        metrics.duplicates.labels(source).inc()
                    else:
                        in_flight[key] += 1
                        item.send = sink.send_event(item.body, outcome.key, item.properties or {})
                else:
                    item.send = sink.send_dead_letter(
                        item.body, item.received.delivery.message_id, item.properties or {}
                    )
            confirming.put_nowait(batch)

    async def _acker(self, confirming: asyncio.Queue[Batch], slots: Slots) -> None:
        """In receive order: wait for each send's confirmation, then ack the run of confirmed messages."""
        confirmations = self.sink.confirmations
        while True:
            batch = await confirming.get()
            self._acking = items = batch.items
            while items:
                head = items[0].send
                if head is not None and not head.done:
                    await confirmations.wait(head)
                run = confirmed_run(items)
                if run:
                    self._settle(run, batch.sent_at)
                    slots.release(len(run))
                    self._acking = items = items[len(run) :]
                blocked = items[0].send if items else None
                if blocked is None and items:
                    raise SendFailed("a send was never started")  # (the sequencer failed first)
                if blocked is not None and blocked.error is not None:
                    raise SendFailed(blocked.error)

    def _settle(self, run: list[Item], sent_at: float) -> None:
        """Every send of `run` is confirmed: ack each message on Tuya's topic, then count the keys as seen."""
        self.source.acknowledge([item.received for item in run])
        metrics, window, recorder = self.metrics, self.window, self._recorder
        now = self._monotonic()
        types: Tally[str] = Tally()
        for item in run:
            outcome = item.outcome
            if isinstance(outcome, Publish):
                if item.send is not None:
                    key = outcome.dedup_key
                    types[outcome.event_type] += 1
                    window.add(key, now)
                    self._release_in_flight(key)
                    recorder.add(key)
            else:
                metrics.rejected_by_reason[outcome.reason].inc()
            if item.trace is not None:
                item.trace.settle("duplicate" if item.duplicate else None)
        if types:
            metrics.publish_latency.observe(now - sent_at)
        for event_type, n in types.items():
            metrics.count_published(event_type, n)
        recorder.nudge()
        self._unsettled -= len(run)
        metrics.in_flight.dec(len(run))
        if self._unsettled == 0:
            self._drained.set()

    def _release_in_flight(self, key: str) -> None:
        count = self._in_flight[key] - 1
        if count > 0:
            self._in_flight[key] = count
        else:
            self._in_flight.pop(key, None)
