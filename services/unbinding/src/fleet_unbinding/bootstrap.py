"""Wiring: settings -> adapters -> handler ports, background loops and the HTTP app's dependencies. The one
place that knows every class.

Loops (started with the service, stopped before its clients close):
- relay: publishes what batch and device writes left in their outboxes, inserts result records;
- resume: refunds crashed refusals, gives back the unused units of idle quota blocks, settles blocks no live
  process settles (by count, after their `until`), and runs every unfinished batch not already running in
  this process (after a crash, a restart, or devices left for later because Tuya was unreachable);
- QR: polls the pairing token of every open QR batch for devices that failed to pair "already bound";
- quota metrics: today's counters (used, limit) as gauges for /metrics.
A batch accepted (or approved) over HTTP starts running at once in this process; any replica may resume
it: every step is a conditional write, so two runners never do anything twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from opentelemetry import propagate, trace

from fleet_shared.clock import utcnow
from fleet_shared.pulsar import OutboxPublisher
from fleet_shared.pulsar.outbox import CountingPublisher
from fleet_shared.service import ReadinessCheck
from fleet_shared.service.domain import DomainClients, domain_clients
from fleet_shared.service.loops import cancel_all, every
from fleet_shared.tracing import BATCH_ID, batch_span
from fleet_shared.tuya.factory import openapi_client
from fleet_shared.tuya.openapi import DEFAULT_RATE_LIMIT, TuyaOpenApiClient
from fleet_shared.tuya.ratelimit import RateLimit
from fleet_unbinding.adapters.cache import CachedAuthorizations, CachedLimits
from fleet_unbinding.adapters.metrics import QuotaGauges, unbinding_metrics
from fleet_unbinding.adapters.mongo import (
    MongoAuthorizationStore,
    MongoBatchStore,
    MongoQuotaCounters,
    MongoQuotaLimits,
    MongoUnbindStore,
)
from fleet_unbinding.adapters.outbox import EventPublisher, OutboxRelay
from fleet_unbinding.adapters.tuya import Pacer, TuyaDevices, TuyaPairingTokens
from fleet_unbinding.domain.quota import QuotaDay, QuotaScope
from fleet_unbinding.ports import Devices, PairingTokens
from fleet_unbinding.service_layer import handlers
from fleet_unbinding.service_layer.events import EventFactory
from fleet_unbinding.settings import UnbindingSettings

SERVICE = "unbinding"
log = logging.getLogger(__name__)
_tracer = trace.get_tracer("fleet_unbinding")

# the shared client's path templates (fleet_shared.tuya.openapi)
LOOKUP_API = "GET /v1.0/devices/{device_id}"
PAIRING_APIS = ("POST /v1.0/device/paring/token", "GET /v1.0/device/paring/tokens/{token}")

# how often today's quota counters are read into their gauges
QUOTA_METRICS_INTERVAL_S = 15.0

# the client's default for APIs without a known limit
PAIRING_RATE_LIMIT = DEFAULT_RATE_LIMIT


@dataclass
class Unbinding:
    """The running parts of one unbinding process."""

    settings: UnbindingSettings
    clients: DomainClients
    batches: MongoBatchStore
    unbinds: MongoUnbindStore
    counters: MongoQuotaCounters
    limits: MongoQuotaLimits
    authorizations: MongoAuthorizationStore
    ports: handlers.Ports
    tokens: PairingTokens
    relay: OutboxRelay
    quota_gauges: QuotaGauges = field(default_factory=QuotaGauges)
    _loops: list[asyncio.Task[None]] = field(default_factory=list, init=False)
    _running: dict[str, asyncio.Task[None]] = field(default_factory=dict, init=False)

    async def prepare_database(self) -> None:
        for store in (self.batches, self.unbinds, self.counters, self.limits, self.authorizations):
            await store.ensure_indexes()

    async def start(self) -> None:
        """Database ready, bus connected, then the loops (the resume loop's first round runs at once)."""
        await self.prepare_database()
        await self.clients.open(self.settings.api_keys)
        await self.clients.broker.start()
        s = self.settings
        self._loops = [
            every("unbinding-relay", s.unbinding_outbox_relay_interval_s, self.relay.relay_once),
            every("unbinding-resume", s.unbinding_resume_interval_s, self.resume, first_now=True),
            every("unbinding-qr", s.unbinding_qr_poll_interval_s, self.poll_qr_batches),
            every("unbinding-quota-metrics", QUOTA_METRICS_INTERVAL_S, self.show_quota_usage, first_now=True),
        ]

    async def stop(self) -> None:
        """Stop the loops and batch runners (their devices resume from the store later), then one last
        relay round, then close the clients."""
        await cancel_all([*self._loops, *self._running.values()])
        self._loops, self._running = [], {}
        try:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.relay.relay_once(), 5.0)
        finally:
            await self.clients.close()

    # --- batches ---------------------------------------------------------------------------------------

    def run_soon(self, batch_id: str) -> None:
        """Run the batch in the background unless this process already runs it."""
        if batch_id in self._running or not self._loops:
            return
        # the trace of whoever started the batch (the operator's request; nothing when the resume loop does)
        started_by: dict[str, str] = {}
        propagate.inject(started_by)

        async def run() -> None:
            try:
                # one span over the batch's work, in the starter's trace and tagged with the batch id, so the
                # Tuya calls and database writes of every device are found from the request or the batch id
                with batch_span(_tracer, "unbinding batch", [started_by], attributes={BATCH_ID: batch_id}):
                    await handlers.run_batch(self.ports, batch_id)
            except Exception as e:  # left for the resume loop
                log.warning("batch %s stopped: %r", batch_id, e)
            finally:
                self._running.pop(batch_id, None)

        # a fresh context: the batch outlives the request that started it (its id and span stay out of
        # the batch's log lines; its trace is carried over explicitly above)
        self._running[batch_id] = asyncio.create_task(
            run(), name=f"unbinding-batch-{batch_id}", context=contextvars.Context()
        )

    async def resume(self) -> int:
        for u in await self.unbinds.refunds_due(1000):
            await handlers.advance(self.ports, u)
        await self.ports.quota.close_idle()
        await handlers.settle_abandoned_blocks(self.ports)
        running = await self.batches.running(1000)
        for batch_id in running:
            self.run_soon(batch_id)
        return len(running)

    async def poll_qr_batches(self) -> int:
        handled = 0
        for batch_id in await self.batches.open_qr(100):
            handled += await handlers.poll_qr(self.ports, self.tokens, batch_id)
        return handled

    async def show_quota_usage(self) -> int:
        day = self.ports.quota_day.key(self.ports.clock())
        subjects = await self.counters.subjects_of(day)
        usages = [await handlers.usage(self.ports, scope, subject, day=day) for scope, subject in subjects]
        self.quota_gauges.show(usages)
        return len(usages)

    # --- readiness -------------------------------------------------------------------------------------

    def readiness_checks(self) -> Mapping[str, ReadinessCheck]:
        return self.clients.readiness_checks()


def tuya_client(settings: UnbindingSettings) -> TuyaOpenApiClient:
    """The client paces lookups and pairing calls; removals are paced by `removal_pacer` (one schedule for
    every removal API), so the client leaves them alone (no default limit: each API used is listed)."""
    lookup = RateLimit(settings.unbinding_tuya_lookup_rate_per_s, burst=1.0)
    return openapi_client(
        settings,
        rate_limits={LOOKUP_API: lookup, **dict.fromkeys(PAIRING_APIS, PAIRING_RATE_LIMIT)},
        default_rate_limit=None,
    )


def removal_pacer(settings: UnbindingSettings) -> Pacer:
    return Pacer(settings.unbinding_tuya_removal_rate_per_s, settings.unbinding_tuya_removal_burst)


def bootstrap(
    settings: UnbindingSettings | None = None,
    *,
    devices: Devices | None = None,
    tokens: PairingTokens | None = None,
    publisher: EventPublisher | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> Unbinding:
    settings = settings or UnbindingSettings()
    own_client = tuya_client(settings) if devices is None or tokens is None else None
    clients = domain_clients(settings, openapi=own_client)
    db = clients.db
    batches, unbinds = MongoBatchStore(db), MongoUnbindStore(db)
    counters, limits, authorizations = (
        MongoQuotaCounters(db),
        MongoQuotaLimits(db),
        MongoAuthorizationStore(db),
    )
    if own_client is not None:
        devices = devices or TuyaDevices(
            own_client,
            removals=removal_pacer(settings),
            in_flight=settings.unbinding_tuya_removals_in_flight,
        )
        tokens = tokens or TuyaPairingTokens(own_client, clock)
    ttl = settings.unbinding_cache_ttl_s
    ports = handlers.Ports(
        batches=batches,
        unbinds=unbinds,
        counters=counters,
        limits=CachedLimits(limits, ttl),
        authorizations=CachedAuthorizations(authorizations, ttl),
        devices=devices,
        events=EventFactory(tenant=settings.tuya_access_id, region=settings.region.lower()),
        clock=clock,
        quota_day=QuotaDay(timedelta(minutes=settings.unbinding_quota_day_utc_offset_minutes)),
        default_limits={
            QuotaScope.ACCOUNT: settings.unbinding_account_daily_limit,
            QuotaScope.PRODUCT: settings.unbinding_product_daily_limit,
        },
        approval_threshold=settings.unbinding_approval_threshold,
        device_concurrency=settings.unbinding_device_concurrency,
        max_calls=settings.unbinding_max_calls_per_device,
        call_lease=timedelta(seconds=settings.unbinding_call_lease_s),
        already_bound_codes=settings.already_bound_codes(),
        quota_block_size=settings.unbinding_quota_block_size,
    )
    counted = CountingPublisher(publisher or OutboxPublisher(clients.broker), unbinding_metrics())
    relay = OutboxRelay(batches, unbinds, counted)
    return Unbinding(
        settings=settings,
        clients=clients,
        batches=batches,
        unbinds=unbinds,
        counters=counters,
        limits=limits,
        authorizations=authorizations,
        ports=ports,
        tokens=tokens,
        relay=relay,
    )
