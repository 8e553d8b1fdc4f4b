"""What every domain service's process holds (pairing, unbinding, ota, status): its broker, its Mongo client
and database, the security kit, and the Tuya OpenAPI client it opened itself; opened,
probed and closed one way.

    clients = domain_clients(settings, "ota", settings.ota_database, openapi=own_client)   # in bootstrap
    await clients.open(settings.ota_api_keys)     # at start, after the service's own indexes
    clients.api_security.install(app)             # in the app factory
    await clients.close(self.loops.stop)          # at stop: the service's own steps first, then the clients

Ingest and tuya-sim hold other things (no API keys and no database of their own, a source of Tuya's stream)
and wire their clients themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from motor.motor_asyncio import AsyncIOMotorClient, AsyncIOMotorDatabase
from pydantic import SecretStr

from fleet_shared.mongo import Document
from fleet_shared.pulsar import PulsarBroker
from fleet_shared.security import ApiSecurity, SecurityKit, SecuritySettings, security_kit
from fleet_shared.tuya.openapi import TuyaOpenApiClient

from .clients import CloseStep, close_all, service_clients, stop_subscribers
from .http import ReadinessCheck
from .settings import ServiceSettings


class DomainSettings(SecuritySettings, ServiceSettings):
    """The common settings of a domain service: the service's (bus, database, HTTP, Tuya project, tracing)
    and the security kit's (OIDC, API keys, roles); each service adds its own `FLEET_<SERVICE>_...`."""


@dataclass
class DomainClients:
    broker: PulsarBroker
    mongo_client: AsyncIOMotorClient[Document]
    db: AsyncIOMotorDatabase[Document]
    security: SecurityKit
    # the Tuya client this process opened itself (None: one was handed to bootstrap, or none is needed)
    openapi: TuyaOpenApiClient | None = None

    @property
    def api_security(self) -> ApiSecurity:
        return self.security.security

    async def open(self, api_keys: SecretStr) -> None:
        """The key store ready (indexes, keys stored before the kit adopted) with the configured keys seeded,
        then the bus connected; consuming starts with `broker.start()` when the service is ready for it."""
        await self.security.prepare(api_keys.get_secret_value())
        await self.broker.connect()

    async def stop_consuming(self) -> None:
        await stop_subscribers(self.broker)

    async def close(self, *first: CloseStep) -> None:
        """The service's own steps (its loops, its relay), then producers flushed and every client closed:
        each runs even when one before it failed (`close_all`)."""
        await close_all(*first, self.broker.stop, self.openapi, self.security, self.mongo_client.close)

    async def bus_ready(self) -> bool:
        return await self.broker.ping(2.0)

    async def database_ready(self) -> bool:
        # a failed ping raises: the kit's readiness probe reports any failure as "not ready"
        await self.db.command("ping")
        return True

    def readiness_checks(self, **more: ReadinessCheck) -> dict[str, ReadinessCheck]:
        """`bus` and `database`, then the service's own checks."""
        return {"bus": self.bus_ready, "database": self.database_ready, **more}


def domain_clients(
    settings: DomainSettings,
    service: str,
    database: str,
    *,
    openapi: TuyaOpenApiClient | None = None,
    **broker_options: Any,
) -> DomainClients:
    """The broker and database (`service_clients`) and the security kit on that database. Nothing connects."""
    broker, client, db = service_clients(settings, service, database, **broker_options)
    return DomainClients(broker, client, db, security_kit(settings, db), openapi)
