"""Wiring: settings -> Mongo stores, Tuya's OTA API, the outbox relay, the device-topic subscriber, the
loops and the HTTP routes. The one place that knows every class."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from fastapi import APIRouter

from fleet_ota.adapters.metrics import ota_metrics
from fleet_ota.adapters.mongo import (
    DeviceStore,
    FirmwareStore,
    LockStore,
    PacingStore,
    PlanStore,
    ProgressStore,
    RolloutStore,
    UpgradeStore,
    ensure_indexes,
)
from fleet_ota.adapters.relay import OutboxRelay
from fleet_ota.adapters.tuya import TuyaOtaApi
from fleet_ota.domain.upgrade import UpgradePolicy
from fleet_ota.entrypoints import consumer
from fleet_ota.entrypoints.http import api_router
from fleet_ota.entrypoints.loops import Loops
from fleet_ota.ports import EventPublisher, TuyaOta
from fleet_ota.service_layer.handlers import Ports, ProjectPace
from fleet_ota.settings import OtaSettings
from fleet_ota.views import OtaViews
from fleet_shared.clock import utcnow
from fleet_shared.pulsar import OutboxPublisher
from fleet_shared.pulsar.outbox import CountingPublisher
from fleet_shared.service import ReadinessCheck
from fleet_shared.service.domain import DomainClients, domain_clients
from fleet_shared.tuya.factory import openapi_client
from fleet_shared.tuya.openapi import TuyaOpenApiClient
from fleet_shared.tuya.ratelimit import RateLimit

SERVICE = "ota"
log = logging.getLogger(__name__)


@dataclass
class Ota:
    """The running parts of one ota process."""

    settings: OtaSettings
    clients: DomainClients
    ports: Ports
    devices: DeviceStore
    views: OtaViews
    relay: OutboxRelay
    loops: Loops

    def routers(self) -> list[APIRouter]:
        return [api_router(self.clients.api_security, self.ports, self.devices, self.views)]

    async def start(self) -> None:
        """Indexes and keys, outboxes a previous process left relayed, then consume and run the loops."""
        await ensure_indexes(self.clients.db)
        await self.clients.open(self.settings.api_keys)
        while await self.relay.relay_once(self.settings.ota_relay_batch):
            pass
        await self.clients.broker.start()
        self.loops.start()

    async def stop_consuming(self) -> None:
        await self.clients.stop_consuming()

    async def drain(self) -> None:
        """Loops stop; what their writes left in outboxes is relayed now (or by the next process)."""
        await self.loops.stop()
        with contextlib.suppress(Exception):
            await self.relay.relay_once(self.settings.ota_relay_batch)

    async def stop(self) -> None:
        await self.clients.close(self.loops.stop)

    def readiness_checks(self) -> Mapping[str, ReadinessCheck]:
        return self.clients.readiness_checks(loops=self.loops_ready)

    async def loops_ready(self) -> bool:
        return self.loops.running()


def bootstrap(
    settings: OtaSettings | None = None,
    *,
    tuya: TuyaOta | None = None,
    publisher: EventPublisher | None = None,
) -> Ota:
    settings = settings or OtaSettings()
    own_client: TuyaOpenApiClient | None = None
    if tuya is None:
        rate = settings.ota_tuya_rate_per_s
        own_client = openapi_client(settings, default_rate_limit=RateLimit(rate=rate, burst=rate))
        tuya = TuyaOtaApi(own_client)
    clients = domain_clients(settings, openapi=own_client)
    broker, db = clients.broker, clients.db
    progress = ProgressStore(db)
    devices = DeviceStore(db)
    ports = Ports(
        firmware=FirmwareStore(db),
        rollouts=RolloutStore(db),
        upgrades=UpgradeStore(db),
        plans=PlanStore(db),
        progress=progress,
        devices=devices,
        locks=LockStore(db),
        pacing=PacingStore(db),
        tuya=tuya,
        clock=utcnow,
        tenant=settings.tuya_access_id,
        policy=UpgradePolicy(
            max_attempts=settings.ota_max_attempts,
            backoff_s=settings.ota_retry_backoff_s,
            backoff_max_s=settings.ota_retry_backoff_max_s,
            attempt_timeout_s=settings.ota_attempt_timeout_s,
        ),
        claim_grace_s=settings.ota_command_grace_s,
        command_window_s=settings.ota_command_grace_s / 4,  # see handlers.recover_commanded
    )
    relay = OutboxRelay(
        [db["firmware"], db["rollouts"], db["upgrades"], db["plans"], db["sweeps"]],
        progress,
        CountingPublisher(publisher or OutboxPublisher(broker), ota_metrics()),
    )

    async def relay_round() -> int:
        # the directory's counts per bucket come up to date in the same loop
        counted = await devices.count_once(settings.ota_relay_batch)
        return await relay.relay_once(settings.ota_relay_batch) + counted

    async def sweep_round() -> int:
        return await relay.sweep([db["upgrades"], db["plans"], db["sweeps"]])

    loops = Loops(
        ports,
        relay_round,
        sweep_round,
        tick_s=settings.ota_tick_s,
        batch=settings.ota_loop_batch,
        burst=settings.ota_dispatch_burst,
        command_grace_s=settings.ota_command_grace_s,
        poll_after_s=settings.ota_poll_after_s,
        project=ProjectPace(settings.ota_tuya_upgrade_per_s) if settings.ota_tuya_upgrade_per_s else None,
        relay_idle_s=settings.ota_relay_idle_s,
    )
    consumer.register(broker, ports, settings.device_subscription)
    return Ota(
        settings=settings,
        clients=clients,
        ports=ports,
        devices=devices,
        views=OtaViews(ports.firmware, ports.rollouts, ports.progress),
        relay=relay,
        loops=loops,
    )
