"""Wiring: settings -> adapters -> writer, subscriber, security kit and HTTP app. The one place that knows
every class. `Status` is the service kit's lifecycle (see `fleet_shared.service.build_app`): start, stop
consuming, drain, stop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from prometheus_client import REGISTRY, CollectorRegistry

from fleet_shared.pulsar.device_batches import DeviceEventBatches
from fleet_shared.service import ReadinessCheck
from fleet_shared.service.domain import DomainClients, domain_clients
from fleet_shared.service.loops import cancel_all, every
from fleet_shared.tuya.factory import openapi_client
from fleet_shared.tuya.openapi import TuyaOpenApiClient
from fleet_status.adapters.history import HistoryStore
from fleet_status.adapters.publisher import FlushPublisher
from fleet_status.adapters.schemas import SchemaStore
from fleet_status.adapters.shadows import ShadowStore
from fleet_status.adapters.tuya import CloudDeviceSource, SchemaCache
from fleet_status.entrypoints import consumer
from fleet_status.ports import EventPublisher, OpenApi
from fleet_status.service_layer.handlers import find_inactive, reconcile_stale, set_inactivity_timeout
from fleet_status.service_layer.writer import ShadowWriter, WriterMetrics
from fleet_status.settings import StatusSettings
from fleet_status.views import StatusViews

SERVICE = "status"
log = logging.getLogger(__name__)


@dataclass
class Status:
    """The running parts of one status process."""

    settings: StatusSettings
    clients: DomainClients
    shadows: ShadowStore
    history: HistoryStore
    views: StatusViews
    writer: ShadowWriter
    device_events: DeviceEventBatches
    cloud: CloudDeviceSource | None
    _reconciler: asyncio.Task[None] | None = field(default=None, init=False)
    _sweeper: asyncio.Task[None] | None = field(default=None, init=False)
    _inactivity: asyncio.Task[None] | None = field(default=None, init=False)

    async def prepare_database(self) -> None:
        await self.shadows.ensure_indexes()
        await self.history.ensure_indexes()

    async def start(self) -> None:
        """Database ready, leftover outbox relayed, writer running, then consume."""
        await self.prepare_database()
        # keys status stored before the kit are adopted; FLEET_STATUS_API_KEYS (the stack's key) is seeded
        await self.clients.open(self.settings.api_keys)
        relayed = await self.writer.recover()
        if relayed:
            log.info("relayed %d events a previous process left in outboxes", relayed)
        self.writer.start()
        await self.clients.broker.start()
        await self.device_events.start()
        s = self.settings
        if self.cloud is not None and s.status_reconcile_interval_s > 0:
            self._reconciler = every("status-reconciler", s.status_reconcile_interval_s, self.reconcile_round)
        self._sweeper = every(
            "status-history-retention", s.status_history_sweep_interval_s, self.sweep_round, first_now=True
        )
        self._inactivity = every(
            "status-inactivity", s.status_inactivity_check_interval_s, self.inactivity_round
        )

    async def stop_consuming(self) -> None:
        """No new device events, no new reconciliation, retention or inactivity rounds."""
        await cancel_all((self._reconciler, self._sweeper, self._inactivity))
        self._reconciler = self._sweeper = self._inactivity = None
        # (the consumer stays open until `stop`: the drain acks what the writer holds through it)
        await self.device_events.stop_receiving()
        await self.clients.stop_consuming()

    async def drain(self) -> None:
        """Write what the writer holds (acking it); what it cannot write in time is redelivered later."""
        await self.writer.stop(self.settings.status_shutdown_timeout_s)

    async def stop(self) -> None:
        """Flush producers, close clients. Also after a failed start, so consuming and the writer are stopped
        here too (each a no-op when already done)."""
        try:
            await self.stop_consuming()
            await self.writer.stop(0)
        finally:
            await self.clients.close(self.device_events.close)

    async def reconcile_round(self) -> None:
        assert self.cloud is not None
        await reconcile_stale(
            self.shadows,
            self.cloud,
            self.writer,
            stale_after=timedelta(seconds=self.settings.status_stale_after_s),
            limit=self.settings.status_reconcile_batch,
        )

    async def sweep_round(self) -> None:
        """Retention of DP history where the server has no TTL indexes: one bounded sweep."""
        deleted = await self.history.sweep(datetime.now(UTC))
        if deleted:
            log.info("deleted %d expired history buckets", deleted)

    async def inactivity_round(self) -> None:
        """Devices past their inactivity deadline, from the deadline index, one bounded batch."""
        await find_inactive(
            self.shadows, self.writer, now=datetime.now(UTC), limit=self.settings.status_inactivity_batch
        )

    async def set_inactivity_timeout(self, device_id: str, timeout_s: float | None) -> None:
        await set_inactivity_timeout(self.writer, device_id, timeout_s, now=datetime.now(UTC))

    async def writer_ready(self) -> bool:
        return self.writer.ready()

    def readiness_checks(self) -> Mapping[str, ReadinessCheck]:
        return self.clients.readiness_checks(writer=self.writer_ready)


def bootstrap(
    settings: StatusSettings | None = None,
    *,
    registry: CollectorRegistry = REGISTRY,
    openapi: OpenApi | None = None,
    publisher: EventPublisher | None = None,
) -> Status:
    settings = settings or StatusSettings()
    own_client: TuyaOpenApiClient | None = None
    if openapi is None and settings.tuya_access_secret.get_secret_value():
        own_client = openapi_client(settings)
        openapi = own_client
    clients = domain_clients(settings, openapi=own_client)
    broker, db = clients.broker, clients.db
    shadows = ShadowStore(
        db, write_chunk=settings.status_write_chunk, write_concurrency=settings.status_write_concurrency
    )
    history = HistoryStore(
        db,
        retention=timedelta(days=settings.status_history_retention_days),
        write_chunk=settings.status_write_chunk,
        write_concurrency=settings.status_write_concurrency,
    )
    schemas = SchemaCache(openapi, SchemaStore(db), ttl_s=settings.status_schema_ttl_s)
    writer = ShadowWriter(
        shadows,
        history,
        schemas,
        publisher or FlushPublisher(broker),
        tenant=settings.tuya_access_id,
        region=settings.region.lower(),
        max_devices=settings.status_batch_max_devices,
        max_delay_s=settings.status_batch_max_delay_ms / 1000,
        max_pending=settings.status_max_pending_messages,
        flush_concurrency=settings.status_flush_concurrency,
        outbox_clear_after_s=settings.status_outbox_clear_after_s,
        stall_after_s=settings.status_writer_stall_s,
        inactivity_ms=settings.inactivity_ms,
        journal_max_rows=settings.status_journal_max_rows,
        journal_max_age_s=settings.status_journal_max_age_s,
        metrics=WriterMetrics(registry),
    )
    device_events = consumer.register(
        broker, writer, settings.device_subscription, tenant=settings.tuya_access_id
    )
    cloud = CloudDeviceSource(openapi, rate_per_s=settings.status_reconcile_rate_per_s) if openapi else None
    return Status(
        settings=settings,
        clients=clients,
        shadows=shadows,
        history=history,
        views=StatusViews(shadows, history),
        writer=writer,
        device_events=device_events,
        cloud=cloud,
    )
