"""What every domain service's process holds (pairing, unbinding, ota, status): its broker, its Mongo client
and database, the security kit, and the Tuya OpenAPI client it opened itself; opened, probed and closed one
way. And the settings they all have: `DomainSettings`, `DeviceConsumerSettings`.

    clients = domain_clients(settings, openapi=own_client)   # in bootstrap (database: `settings.database`)
    await clients.open(settings.api_keys)         # at start, after the service's own indexes
    clients.api_security.install(app)             # in the app factory
    await clients.close(self.loops.stop)          # at stop: the service's own steps first, then the clients

Ingest and tuya-sim hold other things (no API keys and no database of their own, a source of Tuya's stream)
and wire their clients themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from motor.motor_asyncio import AsyncIOMotorClient, AsyncIOMotorDatabase
from pydantic import Field, SecretStr, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource

from fleet_shared.mongo import Document
from fleet_shared.pulsar import PulsarBroker
from fleet_shared.pulsar.device_events import DeviceSubscription
from fleet_shared.security import ApiSecurity, SecurityKit, SecuritySettings, security_kit
from fleet_shared.tuya.openapi import TuyaOpenApiClient

from .clients import CloseStep, close_all, service_clients, stop_subscribers
from .http import ReadinessCheck
from .registry import service as registered
from .settings import ServiceSettings


class DomainSettings(SecuritySettings, ServiceSettings):
    """The common settings of a domain service: the service's (bus, Mongo URI, HTTP, Tuya project, tracing),
    the security kit's (OIDC, key cache, roles), and the two every domain service has under its own prefix
    (the registry's `FLEET_<SERVICE>_`): its database and the API keys seeded at start.

        class OtaSettings(DeviceConsumerSettings):
            service: ClassVar[str] = "ota"        # FLEET_OTA_DATABASE -> .database, FLEET_OTA_API_KEYS ...
            ota_tick_s: float = Field(1.0, gt=0)  # its own knobs keep their full names

    Only these fields are read under the service's prefix, and never under the bare `FLEET_` (no
    `FLEET_DATABASE`); every other field is read as before.
    """

    service: ClassVar[str]  # its name in the registry (`fleet_shared.service.registry`)

    # default: the service's name
    database: str = ""
    # seeded at start: comma separated `name:key[:role+role]` (the security kit's format); stored as sha256
    api_keys: SecretStr = SecretStr("")

    @model_validator(mode="before")
    @classmethod
    def _named_after_the_service(cls, data: Any) -> Any:
        if isinstance(data, dict):
            unset = [n for n in ("database", "subscription") if n in cls.model_fields and not data.get(n)]
            data = {**data, **dict.fromkeys(unset, cls.service)}
        return data

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        own = _kit_fields(settings_cls)
        prefix = f"{registered(cls.service).env_prefix}_"
        return (
            init_settings,
            _Only(env_settings, lambda name: name not in own),
            _Only(EnvSettingsSource(settings_cls, env_prefix=prefix), lambda name: name in own),
            dotenv_settings,
            file_secret_settings,
        )


class DeviceConsumerSettings(DomainSettings):
    """A domain service that consumes the device topic: its subscription under its own prefix too
    (`FLEET_<SERVICE>_SUBSCRIPTION`, `_MAX_REDELIVERIES`, `_RECEIVER_QUEUE_SIZE`, `_INITIAL_POSITION`), as
    the one value its consumer passes to `subscribe_device_events` (one device event at a time unless the
    service says otherwise: pairing's `FLEET_PAIRING_MAX_CONCURRENCY`)."""

    # default: the service's name (shared by its replicas)
    subscription: str = ""
    max_redeliveries: int = Field(5, ge=0)
    receiver_queue_size: int = Field(1000, ge=1)
    # where a new subscription starts: the whole retained topic (earliest) or only new events (latest)
    initial_position: Literal["earliest", "latest"] = "latest"

    @property
    def device_subscription(self) -> DeviceSubscription:
        return DeviceSubscription(
            self.subscription,
            self.max_redeliveries,
            self.receiver_queue_size,
            self.initial_position,
        )


def _kit_fields(settings_cls: type[BaseSettings]) -> frozenset[str]:
    """The fields the kit's classes declare themselves (not the service's own knobs, not the common ones)."""
    kits = [kit for kit in (DomainSettings, DeviceConsumerSettings) if issubclass(settings_cls, kit)]
    return frozenset(
        name for kit in kits for name in vars(kit).get("__annotations__", {}) if name in kit.model_fields
    )


class _Only(PydanticBaseSettingsSource):
    """Another source's values for the fields `keep` names."""

    def __init__(self, source: PydanticBaseSettingsSource, keep: Callable[[str], bool]) -> None:
        super().__init__(source.settings_cls)
        self.source = source
        self.keep = keep

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self.source.get_field_value(field, field_name)

    def __call__(self) -> dict[str, Any]:
        return {name: value for name, value in self.source().items() if self.keep(name)}


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
    settings: DomainSettings, *, openapi: TuyaOpenApiClient | None = None, **broker_options: Any
) -> DomainClients:
    """The service's broker and its database (`service_clients`) and the security kit on that database.
    Nothing connects."""
    broker, client, db = service_clients(settings, settings.service, settings.database, **broker_options)
    return DomainClients(broker, client, db, security_kit(settings, db), openapi)
