"""Wiring: settings -> adapters -> handlers, the device-topic subscriber, background loops and the HTTP app's
dependencies. The one place that knows every class."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from pydantic import SecretStr

from fleet_pairing.adapters.events import EventEncoder
from fleet_pairing.adapters.metrics import pairing_metrics
from fleet_pairing.adapters.mongo import DeviceOwnerStore, SessionStore
from fleet_pairing.adapters.outbox import EventPublisher, OutboxRelay
from fleet_pairing.adapters.system import ConfiguredBindingModes, SystemClock, UuidSessionIds
from fleet_pairing.adapters.tuya import TuyaPairingApi
from fleet_pairing.entrypoints import consumer
from fleet_pairing.ports import TuyaPairing
from fleet_pairing.service_layer import handlers
from fleet_pairing.settings import PairingSettings
from fleet_shared.pulsar import OutboxPublisher
from fleet_shared.pulsar.outbox import CountingPublisher
from fleet_shared.qr import QrImages, render
from fleet_shared.service import ReadinessCheck
from fleet_shared.service.domain import DomainClients, domain_clients
from fleet_shared.service.loops import cancel_all, every
from fleet_shared.tuya.factory import openapi_client
from fleet_shared.tuya.openapi import TuyaOpenApiClient
from fleet_shared.tuya.ratelimit import RateLimit

SERVICE = "pairing"
log = logging.getLogger(__name__)


@dataclass
class Pairing:
    """The running parts of one pairing process; the handlers' ports are its attributes."""

    settings: PairingSettings
    clients: DomainClients
    sessions: SessionStore
    owners: DeviceOwnerStore
    relay: OutboxRelay
    tuya: TuyaPairing
    binding_modes: ConfiguredBindingModes
    clock: SystemClock = field(default_factory=SystemClock)
    ids: UuidSessionIds = field(default_factory=UuidSessionIds)
    render_qr: Callable[[SecretStr], QrImages] = render
    _loops: list[asyncio.Task[None]] = field(default_factory=list, init=False)

    async def start(self) -> None:
        """Database ready, leftover outbox relayed, then consume and run the background loops."""
        await self.sessions.ensure_indexes()
        await self.owners.ensure_indexes()
        if flagged := await self.sessions.flag_unflagged_outboxes():
            log.info("%d sessions held events an earlier version left without outbox_at", flagged)
        await self.clients.open(self.settings.api_keys)
        relayed = await self.relay.sweep(limit=1000, grace=timedelta(0))  # no relay of ours is under way
        if relayed:
            log.info("relayed %d events a previous process left in outboxes", relayed)
        await self.clients.broker.start()
        s = self.settings
        self._loops = [
            every("pairing-poll", s.pairing_poll_interval_s, self.poll_round),
            every("pairing-expiry", s.pairing_expiry_sweep_interval_s, self.expiry_round),
            every("pairing-outbox", s.pairing_outbox_sweep_interval_s, self.relay.sweep),
            every("pairing-removals", s.pairing_poll_interval_s, self.removal_round),
        ]

    async def poll_round(self) -> int:
        return await handlers.poll_active_sessions(
            sessions=self.sessions,
            tuya=self.tuya,
            owners=self.owners,
            binding_modes=self.binding_modes,
            clock=self.clock,
            batch=self.settings.pairing_poll_batch,
            concurrency=self.settings.pairing_poll_concurrency,
        )

    async def last_poll(self, session_id: str) -> object:
        return await handlers.poll_token_result(
            session_id,
            sessions=self.sessions,
            tuya=self.tuya,
            owners=self.owners,
            binding_modes=self.binding_modes,
            clock=self.clock,
        )

    async def expiry_round(self) -> int:
        return await handlers.close_expired_sessions(
            sessions=self.sessions,
            clock=self.clock,
            settle=timedelta(seconds=self.settings.pairing_settle_s),
            batch=self.settings.pairing_poll_batch,
            last_poll=self.last_poll,
        )

    async def removal_round(self) -> int:
        return await handlers.remove_unexpected_devices(
            sessions=self.sessions, tuya=self.tuya, batch=self.settings.pairing_removal_batch
        )

    async def stop_consuming(self) -> None:
        await self.clients.stop_consuming()

    async def drain(self) -> None:
        """The handlers ack as they finish; the relays under way finish, and what is left in an outbox is
        relayed once more."""
        await self._stop_loops()
        await self.relay.drain()
        await self.relay.sweep(limit=1000, grace=timedelta(0))

    async def _stop_loops(self) -> None:
        await cancel_all(self._loops)
        self._loops = []

    async def stop(self) -> None:
        await self.clients.close(self._stop_loops, self.relay.abandon)

    @property
    def default_lifetime(self) -> timedelta:
        return timedelta(seconds=self.settings.pairing_default_token_lifetime_s)

    def readiness_checks(self) -> Mapping[str, ReadinessCheck]:
        return self.clients.readiness_checks()


def tuya_client(settings: PairingSettings) -> TuyaOpenApiClient:
    limit = RateLimit(settings.pairing_tuya_rate_per_s, settings.pairing_tuya_burst)
    return openapi_client(settings, default_rate_limit=limit)


def bootstrap(
    settings: PairingSettings | None = None,
    *,
    tuya: TuyaPairing | None = None,
    publisher: EventPublisher | None = None,
) -> Pairing:
    settings = settings or PairingSettings()
    binding_modes = ConfiguredBindingModes.parse(
        settings.pairing_binding_modes, settings.pairing_default_binding_mode or None
    )
    own_client = tuya_client(settings) if tuya is None else None
    clients = domain_clients(settings, openapi=own_client)
    broker, db = clients.broker, clients.db
    encoder = EventEncoder(tenant=settings.tuya_access_id, region=settings.region.lower())
    # the relay clears through a store of its own; the sessions store hands it each durable write's events,
    # relayed in the background (a consumer worker moves on to its next device event)
    counted = CountingPublisher(publisher or OutboxPublisher(broker), pairing_metrics())
    relay = OutboxRelay(
        SessionStore(db, encoder), counted, grace=timedelta(seconds=settings.pairing_outbox_grace_s)
    )
    sessions = SessionStore(db, encoder, relay=relay.relay_later)
    owners = DeviceOwnerStore(db)
    if own_client is not None:
        tuya = TuyaPairingApi(own_client)
    consumer.register(
        broker,
        sessions=sessions,
        owners=owners,
        binding_modes=binding_modes,
        subscription=settings.device_subscription,
        tenant=settings.tuya_access_id,
    )
    return Pairing(
        settings=settings,
        clients=clients,
        sessions=sessions,
        owners=owners,
        relay=relay,
        tuya=tuya,
        binding_modes=binding_modes,
    )
