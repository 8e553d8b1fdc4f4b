"""The clients a service process holds: the Pulsar broker opened from the common settings (with the topics
it declares it publishes) and its database, the bus's token and CA for any other Pulsar client or admin call,
and the one way to stop consuming and to close them all on the way out. A domain service holds them (with
its security kit and Tuya client) in `domain.DomainClients`, which uses these:

    broker, mongo_client, db = service_clients(settings, "ota", "ota")
    ...
    await stop_subscribers(broker)                                   # stop consuming
    await close_all(broker.stop, openapi, security, mongo_client.close)   # on the way out
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple, Protocol

import pulsar
from motor.motor_asyncio import AsyncIOMotorClient, AsyncIOMotorDatabase

from fleet_contracts.topics import Topic
from fleet_shared import mongo
from fleet_shared.provisioning import provision
from fleet_shared.pulsar import PulsarBroker

from .settings import ServiceSettings

log = logging.getLogger(__name__)


class AsyncClosable(Protocol):
    """A client closed with `await client.aclose()` (httpx's and the Tuya OpenAPI client's way, the kit's)."""

    async def aclose(self) -> None: ...


# a close function (sync or async), a client with `aclose()`, or None for a client this process has not
CloseStep = Callable[[], Awaitable[object] | object] | AsyncClosable | None


def pulsar_client_kwargs(settings: ServiceSettings) -> dict[str, Any]:
    """The `pulsar.Client` keywords for our bus with token authentication and TLS (`authentication`,
    `tls_trust_certs_file_path`; nothing for a plain local one): for a client a service opens itself."""
    kwargs: dict[str, Any] = {}
    token = settings.pulsar_auth_token.get_secret_value()
    if token:
        kwargs["authentication"] = pulsar.AuthenticationToken(token)
    if settings.pulsar_tls_trust_certs_file:
        kwargs["tls_trust_certs_file_path"] = settings.pulsar_tls_trust_certs_file
    return kwargs


def pulsar_client_options(settings: ServiceSettings) -> dict[str, Any]:
    """PulsarBroker's `authentication` and `client_options` for a broker with token authentication and TLS
    (nothing for a plain local one)."""
    kwargs = pulsar_client_kwargs(settings)
    options: dict[str, Any] = {}
    if "authentication" in kwargs:
        options["authentication"] = kwargs.pop("authentication")
    if kwargs:
        options["client_options"] = kwargs
    return options


def pulsar_broker(settings: ServiceSettings, **broker_options: Any) -> PulsarBroker:
    """The service's broker at `FLEET_PULSAR_URL`, authenticated and trusting the configured CA;
    `broker_options` are PulsarBroker's own (producer_options, log_level, ...)."""
    return PulsarBroker(settings.pulsar_url, **pulsar_client_options(settings), **broker_options)


class ServiceClients(NamedTuple):
    broker: PulsarBroker
    mongo_client: AsyncIOMotorClient[mongo.Document]
    db: AsyncIOMotorDatabase[mongo.Document]


def service_clients(
    settings: ServiceSettings, service: str, database: str, **broker_options: Any
) -> ServiceClients:
    """A domain service's broker (`pulsar_broker`; every message's "Received"/"Processed" log lines only at
    DEBUG unless `log_level` says otherwise: thousands a second) and its database on a client named after the
    service (`fleet-<service>`, as the server's logs and current ops show it). Nothing connects yet."""
    broker_options.setdefault("log_level", logging.DEBUG)
    client = mongo.connect(settings.mongodb_uri, app_name=f"fleet-{service}")
    return ServiceClients(pulsar_broker(settings, **broker_options), client, client[database])


def provision_topics(settings: ServiceSettings, tuya_access_id: str | None = None) -> list[str]:
    """`fleet_shared.provisioning.provision` at `FLEET_PULSAR_ADMIN_URL` with the bus's token (as `Bearer`)
    and CA, as the provisioning Job runs it; blocking (urllib): call it in a thread from async code."""
    return provision(
        settings.pulsar_admin_url,
        tuya_access_id,
        token=settings.pulsar_auth_token.get_secret_value() or None,
        tls_trust_certs_file=settings.pulsar_tls_trust_certs_file,
    )


def declare_publishers(broker: PulsarBroker, *published: Topic[Any]) -> None:
    """Declare the topics a service publishes (through its outbox relay), for the AsyncAPI document: name,
    payload schema and description, all from the topic registry."""
    for topic in published:
        broker.publisher(topic.name, schema=topic.schema, description=topic.description)


async def stop_subscribers(broker: PulsarBroker) -> None:
    """Stop every subscriber (no new messages; the broker and its producers stay up for the drain). One that
    fails to stop does not keep the others running: the broker's own stop closes it later."""
    for sub in broker.subscribers:
        with contextlib.suppress(Exception):
            await sub.stop()


async def close_all(*steps: CloseStep) -> None:
    """Run each close step in order: a function is called (and awaited when it returns an awaitable), a
    client's `aclose()` is awaited, None (a client this process does not hold) is skipped.
    Every step runs even when an earlier one failed, so one failing client never leaves the others open.
    Each failure is logged with its step; afterwards the first one is raised, so the caller still sees that
    stopping failed."""
    first: BaseException | None = None
    for step in steps:
        if step is None:
            continue
        try:
            result = step() if callable(step) else step.aclose()
            if inspect.isawaitable(result):
                await result
        except BaseException as e:  # cancellation too: the remaining clients still close
            log.warning("closing: %s failed: %r", _name(step), e, exc_info=e)
            first = first or e
    if first is not None:
        raise first


def _name(step: CloseStep) -> str:
    if callable(step):
        return str(getattr(step, "__qualname__", step))
    return f"{type(step).__name__}.aclose"
