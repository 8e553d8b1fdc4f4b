"""The shadow writer: batches device facts, merges them per device, writes each device once per batch and
relays the events those writes recorded. One writer per process.

Flushes are pipelined: up to `flush_concurrency` batches are in flight at once, their device sets disjoint.
While a device's batch is in flight, its newly arrived facts wait in `_pending` and are merged together into
its next batch: one shadow write per device per flush, whatever the report count (on a store that writes one
statement at a time, fewer writes is the only way up). A device is never in two flushes at once, so its
facts are merged in arrival order and each write is conditional on the version the previous one wrote.
When the store is the bottleneck, a device's reports wait together: what bounds throughput is writes per
second times the reports each write carries, so back-pressure counts every message held unacknowledged
(pending or being written) against `max_pending`, set as high as the broker lets one consumer hold.

Per batch: load the shadows not in memory (relaying any events a crash left in their outbox), merge each
device's facts, write every changed shadow with its outbox and its history journal in one conditional
single-document write, publish the outbox, acknowledge the messages. The journal (`domain/journal.py`) holds
the DP and presence history not yet in its hourly bucket, so a report is durable, and acknowledged, with that
one write. Journals that are due (full, old, or spanning two hours) move in the same flush: first one bucket
append per device and hour (which skips rows already there), then the shadow write that leaves the moved rows
out. A journal that is due by age while its device is silent gets a flush of its own.
A crash anywhere before the acknowledgement redelivers the messages; re-merging them changes nothing that was
already written (merges are idempotent, a journal holds each report once and a bucket skips what it holds),
and events left in an outbox are published on the next load with their deterministic ids.
A write that loses a race with another replica (the version moved on) is merged again from a fresh read.

Tracing (OpenTelemetry's batch-processing convention): a flush runs in a `status flush` span, child of the
first traced message's consume span and linked to the others (`fleet_shared.tracing.batch_span`), so its
database writes and relayed events are in a trace. Each device written also gets a short `status shadow write`
span, under the consume span of the newest traced message merged into that write and linked to the flush and
to the device's other messages, from the first one's arrival until the shadow is durable; it is tagged with
the device id, the version written and the flush's trace id. Zipkin shows links poorly: whoever follows a
device there finds each write of its shadow in the trace of the report it wrote last, and from its tag the
flush with its database write. One span per device and flush, not per message: under load several reports
of a device merge into one write, and one span per write keeps tracing's cost per message small.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice

from opentelemetry import trace
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, format_trace_id
from opentelemetry.util.types import AttributeValue
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from pulsar.asyncio import PulsarException

from fleet_contracts.outbox import OutboxEntry
from fleet_shared import mongo
from fleet_shared.pulsar.confirmed import SendFailedError
from fleet_shared.tracing import DEVICE_ID, batch_span
from fleet_shared.tracing.batch import MAX_LINKS
from fleet_status.domain.dp_schema import DpSchema
from fleet_status.domain.events import outbox_for
from fleet_status.domain.journal import Journal, JournalLimits
from fleet_status.domain.shadow import DeviceFacts, Shadow, merge
from fleet_status.ports import (
    EventPublisher,
    HistoryRepository,
    SchemaSource,
    Settlement,
    ShadowRepository,
    ShadowWrite,
)

log = logging.getLogger(__name__)

FLUSH_SPAN = "status flush"
WRITTEN_SPAN = "status shadow write"
#: on a message's `status shadow write` span: the trace holding the flush (and its database writes)
FLUSH_TRACE_ID = "status.flush.trace_id"
SHADOW_VERSION = "status.shadow.version"
SHADOW_CHANGED = "status.shadow.changed"
SHADOW_MESSAGES = "status.shadow.messages"  # messages merged into this write of the device


@dataclass(frozen=True, slots=True)
class Pending:
    facts: DeviceFacts
    message: Settlement | None
    tenant: str
    region: str
    # the consume span the facts came in, when it is recorded, and the arrival (ns): the write's own span
    traced: SpanContext | None = None
    received_ns: int = 0


@dataclass(frozen=True, slots=True)
class _Flushed:
    """What one flush did: devices whose write lost a race, and devices whose shadow changed (written)."""

    lost: set[str]
    changed: set[str]


@dataclass(slots=True)
class _Cached:
    """A shadow and its journal as last read or written."""

    shadow: Shadow
    journal: Journal = field(default_factory=Journal)


@dataclass
class WriterMetrics:
    registry: CollectorRegistry = REGISTRY
    flushes: Histogram = field(init=False)
    messages: Counter = field(init=False)
    writes: Counter = field(init=False)
    conflicts: Counter = field(init=False)
    refused: Counter = field(init=False)
    failures: Counter = field(init=False)
    journal_moves: Counter = field(init=False)
    in_flight: Gauge = field(init=False)

    def __post_init__(self) -> None:
        r = self.registry
        self.flushes = Histogram("status_flush_seconds", "Time to flush one batch", registry=r)
        self.in_flight = Gauge("status_flushes_in_flight", "Batches being written now", registry=r)
        self.messages = Counter("status_messages", "Device events merged", registry=r)
        self.writes = Counter("status_shadow_writes", "Shadow documents written", registry=r)
        self.conflicts = Counter("status_write_conflicts", "Shadow writes that lost a race", registry=r)
        self.refused = Counter("status_dp_values_refused", "DP values refused by their schema", registry=r)
        self.journal_moves = Counter(
            "status_journal_moves", "Device journals moved to their history buckets", registry=r
        )
        self.failures = Counter(
            "status_flush_failures",
            "Batches that failed (kept and retried in an outage, else nacked)",
            registry=r,
        )


def is_outage(error: BaseException) -> bool:
    """The database or the bus is unreachable for now (restart, failover, timeout, a send the broker did not
    persist): retry, don't reject."""
    return mongo.is_transient(error) or isinstance(error, PulsarException | SendFailedError)


class ShadowWriter:
    def __init__(
        self,
        shadows: ShadowRepository,
        history: HistoryRepository,
        schemas: SchemaSource,
        publisher: EventPublisher,
        *,
        tenant: str,
        region: str,
        max_devices: int = 1000,
        max_delay_s: float = 0.02,
        max_pending: int = 40_000,
        flush_concurrency: int = 2,
        outbox_clear_after_s: float = 1.0,
        stall_after_s: float = 60.0,
        inactivity_ms: Callable[[str | None], int | None] = lambda _product_id: None,
        journal_max_rows: int = 32,
        journal_max_age_s: float = 600.0,
        metrics: WriterMetrics | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
        tracer: trace.Tracer | None = None,
    ) -> None:
        self.shadows = shadows
        self.history = history
        self.schemas = schemas
        self.publisher = publisher
        self.tenant = tenant
        self.region = region
        self.max_devices = max_devices
        self.max_delay_s = max_delay_s
        self.max_pending = max_pending
        self.flush_concurrency = flush_concurrency
        self.outbox_clear_after_s = outbox_clear_after_s
        self.metrics = metrics or WriterMetrics(CollectorRegistry())
        self.clock = clock
        self.stall_after_s = stall_after_s
        self.inactivity_ms = inactivity_ms  # a product's inactivity timeout (None: none)
        self.journal_limits = JournalLimits(journal_max_rows, round(journal_max_age_s * 1000))
        # how often the cached journals are looked at for one due by age (a silent device's)
        self._journal_check_s = min(max(journal_max_age_s / 10, 0.5), 30.0)
        self.monotonic = monotonic
        self._next_journal_check = monotonic() + self._journal_check_s
        self._cache: dict[str, _Cached] = {}
        self._pending: dict[str, list[Pending]] = {}
        self._pending_count = 0
        # messages held unacknowledged, pending or in a batch being written: what back-pressure bounds (the
        # broker stops delivering to a consumer holding too many unacked messages: 50,000 by default)
        self._held = 0
        self._in_flight: set[str] = set()  # devices of the batches being written (never in two at once)
        self._flushes: set[asyncio.Task[None]] = set()  # the batches being written, started by `_run`
        self._running = 0  # batches being written (by `_run` or a direct `flush_once`)
        self.tracer = tracer or trace.get_tracer(__name__)
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        # devices whose last write left relayed events in the outbox: those events, when relayed (monotonic)
        self._relayed: dict[str, tuple[list[OutboxEntry], float]] = {}
        self._task: asyncio.Task[None] | None = None
        self._retry_delay_s = 0.0
        self._stopping = False
        self.healthy = True
        # since when work (pending or in a flush) has waited without a flush completing; None: no work waits
        self._waiting_since: float | None = None

    # --- intake ---------------------------------------------------------------------------------------

    @property
    def pending_messages(self) -> int:
        return self._pending_count

    @property
    def held_messages(self) -> int:
        """Messages pending or being written: not yet settled."""
        return self._held

    @property
    def stalled(self) -> bool:
        """Work has waited longer than `stall_after_s` without a flush completing: the writer is stuck (a
        hung database call, a dead task) and only a restart helps."""
        since = self._waiting_since
        return since is not None and self.monotonic() - since > self.stall_after_s

    def ready(self) -> bool:
        """The last flush worked and the writer is not stuck (readiness)."""
        return self.healthy and not self.stalled

    async def submit(
        self, facts: DeviceFacts, message: Settlement | None, *, tenant: str, region: str
    ) -> None:
        """Queue facts for the next batch (merged by `_flush`, in the writer's task); waits while too many
        messages are held, pending or being written (back-pressure)."""
        while self._held >= self.max_pending:
            self._room.clear()
            await self._room.wait()
        # the consume span, when recorded: the shadow write gets a span under it (`_trace_written`)
        span = trace.get_current_span()
        if span.is_recording():
            item = Pending(facts, message, tenant, region, span.get_span_context(), time.time_ns())
        else:
            item = Pending(facts, message, tenant, region)
        self._pending.setdefault(facts.device_id, []).append(item)
        self._pending_count += 1
        self._held += 1
        if self._waiting_since is None:
            self._waiting_since = self.monotonic()
        self._wake.set()

    # --- lifecycle ------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name="status-shadow-writer")

    async def stop(self, drain_s: float = 15.0) -> None:
        """Flush what is pending (its messages get acked), then stop."""
        self._stopping = True
        self._wake.set()
        task, self._task = self._task, None
        if task is not None:
            try:
                await asyncio.wait_for(task, drain_s)
            except TimeoutError:
                log.warning(
                    "shadow writer did not drain within %.0fs; unacked messages will be redelivered", drain_s
                )
        # whatever is still pending was never acked: Pulsar redelivers it to the next consumer

    async def _run(self) -> None:
        try:
            await self._dispatch()
        finally:
            # stopped (or its drain timed out): batches still being written are abandoned, unacked
            for task in list(self._flushes):
                task.cancel()
            await asyncio.gather(*self._flushes, return_exceptions=True)

    async def _dispatch(self) -> None:
        """Start a batch whenever a slot is free and a pending device is in no batch being written; idle
        chores (relayed outboxes) when nothing is pending."""
        while True:
            self._wake.clear()
            if not self._stopping:
                self._queue_aged_journals()
            if self._can_start():
                if len(self._pending) < self.max_devices and not self._stopping and self.max_delay_s > 0:
                    await asyncio.sleep(self.max_delay_s)  # let the batch fill a little
                self._start_flush()
                continue
            if self._running or self._flushes:
                await self._wake.wait()  # a batch ended, or work arrived
                continue
            if self._stopping:
                return  # (journals are durable in their shadows: nothing else to write)
            idle_s = max(min(self.outbox_clear_after_s, 1.0), 0.05)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), idle_s)
            if not self._pending:
                await self._clear_relayed_outboxes()

    def _queue_aged_journals(self) -> None:
        """A device whose journal is due by age and that is in no batch gets one of its own, with no facts:
        the flush moves the journal (so a silent device's history reaches its bucket too). Only cached
        devices are looked at, now and then; at most `max_devices` at a time."""
        mono = self.monotonic()
        if mono < self._next_journal_check:
            return
        self._next_journal_check = mono + self._journal_check_s
        cutoff = int(self.clock().timestamp() * 1000) - self.journal_limits.max_age_ms
        queued = 0
        for device_id, cached in self._cache.items():
            since = cached.journal.since_ms
            if since is None or since > cutoff or device_id in self._pending or device_id in self._in_flight:
                continue
            self._pending[device_id] = []
            queued += 1
            if queued >= self.max_devices:
                break
        if queued:
            if self._waiting_since is None:
                self._waiting_since = mono
            self._wake.set()

    def _can_start(self) -> bool:
        # in an outage one batch at a time (it retries with backoff): more would only fail alongside
        limit = 1 if self._retry_delay_s else self.flush_concurrency
        if len(self._flushes) >= limit:
            return False
        return any(device_id not in self._in_flight for device_id in self._pending)

    def _start_flush(self) -> None:
        batch = self._take_batch()
        if not batch:
            return
        task = asyncio.create_task(self._write_batch(batch), name="status-shadow-flush")
        self._flushes.add(task)
        task.add_done_callback(self._flush_ended)

    def _flush_ended(self, task: asyncio.Task[None]) -> None:
        self._flushes.discard(task)
        self._wake.set()
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("a shadow flush failed unexpectedly: %r", error, exc_info=error)

    # --- one batch ------------------------------------------------------------------------------------

    def _take_batch(self) -> dict[str, list[Pending]]:
        """The oldest pending devices that are in no batch being written, with all their facts so far."""
        batch: dict[str, list[Pending]] = {}
        for device_id in self._pending:
            if len(batch) >= self.max_devices:
                break
            if device_id not in self._in_flight:
                batch[device_id] = []
        for device_id in batch:
            items = batch[device_id] = self._pending.pop(device_id)
            self._pending_count -= len(items)
        self._in_flight.update(batch)
        return batch

    def _requeue(self, batch: dict[str, list[Pending]]) -> None:
        for device_id, items in batch.items():
            self._pending[device_id] = items + self._pending.get(device_id, [])
            self._pending_count += len(items)

    async def flush_once(self) -> None:
        """Write one batch of the pending devices that are in no batch being written, and settle it."""
        batch = self._take_batch()
        if batch:
            await self._write_batch(batch)

    async def _write_batch(self, batch: dict[str, list[Pending]]) -> None:
        devices = list(batch)
        self._running += 1
        self.metrics.in_flight.inc()
        try:
            await self._write_and_settle(batch)
        finally:
            # after any requeue, so the device's next batch holds its facts in arrival order
            self._in_flight.difference_update(devices)
            self._running -= 1
            self.metrics.in_flight.dec()
            self._wake.set()

    async def _write_and_settle(self, batch: dict[str, list[Pending]]) -> None:
        started = time.monotonic()
        try:
            flushed = await self._traced_flush(batch)
        except Exception as e:
            await self._failed(batch, e)
            return
        self.healthy = True
        self._retry_delay_s = 0.0
        if flushed.lost:
            self.metrics.conflicts.inc(len(flushed.lost))
            self._requeue({d: batch.pop(d) for d in flushed.lost})
        # durable: the shadow and the report's history (its journal) went in one write
        await _settle(batch.values(), ack=True)
        self._release(_count(batch))
        self._flush_completed()
        self.metrics.flushes.observe(time.monotonic() - started)

    def _release(self, settled: int) -> None:
        self._held -= settled
        if self._held < self.max_pending:
            self._room.set()

    def _flush_completed(self) -> None:
        """A batch was settled: whatever is still pending (or in another batch) waits from now."""
        waiting = bool(self._pending) or self._running > 1
        self._waiting_since = self.monotonic() if waiting else None

    async def _failed(self, batch: dict[str, list[Pending]], error: Exception) -> None:
        """An outage keeps the batch and retries it with backoff; anything else nacks its messages.

        Either way the cached shadows are dropped: the write may or may not have landed, so they are read
        again.
        """
        self.healthy = False
        self.metrics.failures.inc()
        for device_id in batch:
            self._cache.pop(device_id, None)
        if is_outage(error):
            # Nacking here would burn redeliveries and dead-letter good messages during a database restart.
            self._retry_delay_s = min(max(self._retry_delay_s * 2, 0.2), 5.0)
            log.warning(
                "flushing %d devices failed (outage), retrying in %.1fs: %r",
                len(batch),
                self._retry_delay_s,
                error,
            )
            self._requeue(batch)
            await asyncio.sleep(self._retry_delay_s)
            return
        log.warning("flushing %d devices failed, their messages are nacked: %r", len(batch), error)
        await _settle(batch.values(), ack=False)
        self._release(_count(batch))
        self._flush_completed()
        await asyncio.sleep(0.2)

    async def _traced_flush(self, batch: dict[str, list[Pending]]) -> _Flushed:
        """`_flush` in a `status flush` span when a message of the batch is traced (see the module's
        docstring), and a `status shadow write` span per traced message once its shadow is durable."""
        traced = (p.traced for items in batch.values() for p in items if p.traced is not None)
        carriers = [_carrier(c) for c in islice(traced, MAX_LINKS + 1)]
        if not carriers:
            return await self._flush(batch)
        attributes: dict[str, AttributeValue] = {
            "status.flush.devices": len(batch),
            "status.flush.messages": _count(batch),
        }
        with batch_span(self.tracer, FLUSH_SPAN, carriers, attributes=attributes) as span:
            flushed = await self._flush(batch)
            self._trace_written(batch, flushed, span.get_span_context())
        return flushed

    def _trace_written(self, batch: dict[str, list[Pending]], flushed: _Flushed, flush: SpanContext) -> None:
        """A device's shadow is durable now: one span per device and flush (lost races are traced when merged
        again), under the newest traced message merged into it and linked to the flush and the others."""
        end_ns = time.time_ns()
        flush_trace = format_trace_id(flush.trace_id)
        for device_id, items in batch.items():
            traced = [p.traced for p in items if p.traced is not None]
            if not traced or device_id in flushed.lost:
                continue
            *older, newest = traced
            arrived_ns = next(p.received_ns for p in items if p.traced is not None)
            cached = self._cache.get(device_id)
            attributes: dict[str, AttributeValue] = {
                DEVICE_ID: device_id,
                SHADOW_VERSION: cached.shadow.version if cached else -1,
                SHADOW_CHANGED: device_id in flushed.changed,
                SHADOW_MESSAGES: len(items),
                FLUSH_TRACE_ID: flush_trace,
            }
            links = [Link(flush), *(Link(c) for c in older[-MAX_LINKS:])]
            parent = trace.set_span_in_context(NonRecordingSpan(newest))
            span = self.tracer.start_span(
                WRITTEN_SPAN, parent, links=links, attributes=attributes, start_time=arrived_ns
            )
            span.end(end_ns)

    async def _flush(self, batch: dict[str, list[Pending]]) -> _Flushed:
        """Merge and write the batch, moving the journals that are due first: the devices whose write lost a
        race, and those whose shadow changed."""
        now = self.clock()
        now_ms = int(now.timestamp() * 1000)
        await self._load_missing(list(batch))
        schemas = await self._schemas_for(batch)

        writes: list[ShadowWrite] = []
        changed: set[str] = set()
        moves: dict[str, Journal] = {}
        write_id = uuid.uuid4().hex
        for device_id, items in batch.items():
            cached = self._cache[device_id]
            self.metrics.messages.inc(len(items))
            product_id = cached.shadow.product_id or next(
                (i.facts.product_id for i in items if i.facts.product_id), None
            )
            result = merge(
                cached.shadow,
                [i.facts for i in items],
                schemas.get(device_id),
                product_inactivity_ms=self.inactivity_ms(product_id),
            )
            if result.refused:
                self.metrics.refused.inc(len(result.refused))
                log.info(
                    "refused DP values of %s: %s",
                    device_id,
                    "; ".join(f"{r.code}: {r.reason}" for r in result.refused),
                    extra={"device_id": device_id},
                )
            # (the same journal when nothing in it is new: a replay writes nothing)
            journal = cached.journal.with_rows(result.history, result.presence_history, now_ms)
            if journal.due(now_ms, self.journal_limits):
                moves[device_id] = journal
                journal = Journal()
            if journal is cached.journal and not result.changed:
                continue
            outbox: list[OutboxEntry] = []
            if result.changed:
                changed.add(device_id)
                last = items[-1]
                outbox = outbox_for(result, tenant=last.tenant, region=last.region, now=now)
            else:
                # only history to keep (an older report) or a move: the document still moves on a version
                result.shadow.version = cached.shadow.version + 1
            writes.append(ShadowWrite(result.shadow, cached.shadow.version, outbox, write_id, journal))

        if moves:
            # the buckets first: the shadow writes below leave the moved rows out of the journals
            await self.history.add(
                {d: j.readings for d, j in moves.items() if j.readings},
                {d: j.presence for d, j in moves.items() if j.presence},
                now,
            )
            self.metrics.journal_moves.inc(len(moves))
        lost = await self.shadows.write(writes, now) if writes else set()
        written = [w for w in writes if w.shadow.device_id not in lost]
        for device_id in lost:
            self._cache.pop(device_id, None)
        for w in written:
            # (set anew: `forget` may have dropped it meanwhile)
            self._cache[w.shadow.device_id] = _Cached(w.shadow, w.journal)
            self._relayed.pop(w.shadow.device_id, None)
        self.metrics.writes.inc(len(written))
        await self.publisher.publish([e for w in written for e in w.outbox])
        mono = time.monotonic()
        for w in written:
            if w.outbox:
                self._relayed[w.shadow.device_id] = (w.outbox, mono)
        return _Flushed(lost, changed - lost)

    async def _load_missing(self, device_ids: Sequence[str]) -> None:
        missing = [d for d in device_ids if d not in self._cache]
        if not missing:
            return
        loaded = await self.shadows.load(missing)
        leftovers = [e for stored in loaded.values() for e in stored.outbox]
        if leftovers:
            # a crash (or a failed batch) left events unrelayed: publish them before anything newer
            await self.publisher.publish(leftovers)
        mono = time.monotonic()
        for device_id in missing:
            stored = loaded.get(device_id)
            self._cache[device_id] = (
                _Cached(stored.shadow, stored.journal) if stored else _Cached(Shadow(device_id))
            )
            if stored is not None and stored.outbox:
                self._relayed[device_id] = (stored.outbox, mono - self.outbox_clear_after_s)

    async def _schemas_for(self, batch: dict[str, list[Pending]]) -> dict[str, DpSchema | None]:
        wanted: dict[str, tuple[str | None, str]] = {}
        for device_id, items in batch.items():
            product_id = self._cache[device_id].shadow.product_id or next(
                (i.facts.product_id for i in items if i.facts.product_id), None
            )
            wanted[device_id] = (product_id, device_id)
        by_product: dict[str, DpSchema | None] = {}
        fetch: dict[str, str] = {}
        for product_id, device_id in wanted.values():
            if product_id and product_id not in fetch:
                fetch[product_id] = device_id
        results = await asyncio.gather(*(self.schemas.get(p, d) for p, d in fetch.items()))
        by_product = dict(zip(fetch, results, strict=True))
        return {d: by_product.get(p) if p else None for d, (p, _) in wanted.items()}

    async def _clear_relayed_outboxes(self) -> None:
        """Empty the outbox of devices that have not been written again since their events were relayed."""
        if not self._relayed:
            return
        cutoff = time.monotonic() - self.outbox_clear_after_s
        due = {
            d: r
            for d, r in self._relayed.items()
            if r[1] <= cutoff and d not in self._pending and d not in self._in_flight
        }
        if not due:
            return
        try:
            await self.shadows.clear_outbox({d: entries for d, (entries, _) in due.items()})
        except Exception as e:
            log.warning("clearing %d relayed outboxes failed, will retry: %r", len(due), e)
            return
        for device_id, relayed in due.items():
            if self._relayed.get(device_id) is relayed:
                del self._relayed[device_id]

    async def recover(self, limit: int = 10_000) -> int:
        """At start-up: relay events a previous process wrote but did not publish; returns how many."""
        stored = await self.shadows.with_outbox(limit)
        entries = [e for s in stored for e in s.outbox]
        if entries:
            await self.publisher.publish(entries)
            await self.shadows.clear_outbox({s.shadow.device_id: s.outbox for s in stored})
        return len(entries)

    def forget(self, device_id: str) -> None:
        """Drop a cached shadow (reconciliation reads the stored one fresh)."""
        self._cache.pop(device_id, None)


async def _settle(groups: Iterable[list[Pending]], *, ack: bool) -> None:
    """Ack (or nack) the messages one after another: the client only queues an ack, so each await returns
    at once; a task per message (`gather`) would cost more than the ack itself, thousands a second."""
    failed = 0
    first: Exception | None = None
    for items in groups:
        for p in items:
            if p.message is None:
                continue
            try:
                await (p.message.ack() if ack else p.message.nack())
            except Exception as e:
                failed += 1
                first = first or e
    if failed:
        # the consumer closed meanwhile: Pulsar redelivers, and the merge makes the replay harmless
        log.warning("settling %d messages failed: %r", failed, first)


def _count(batch: dict[str, list[Pending]]) -> int:
    return sum(len(items) for items in batch.values())


def _carrier(context: SpanContext) -> dict[str, str]:
    """W3C trace context of a consume span, as `batch_span` reads it from a message's properties."""
    flags = int(context.trace_flags)
    return {"traceparent": f"00-{context.trace_id:032x}-{context.span_id:016x}-{flags:02x}"}
