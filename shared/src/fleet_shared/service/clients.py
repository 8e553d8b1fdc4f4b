"""The clients a service process holds: the Pulsar broker opened from the common settings (with the topics
it declares it publishes), and the one way to close them all on the way out.

    broker = pulsar_broker(settings, log_level=logging.DEBUG)
    ...
    async def stop(self) -> None:
        await close_all(self.broker.stop, self.openapi, self.security, self.mongo_client.close)
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import pulsar

from fleet_contracts.topics import Topic
from fleet_shared.pulsar import PulsarBroker

from .settings import ServiceSettings

log = logging.getLogger(__name__)


class AsyncClosable(Protocol):
    """A client closed with `await client.aclose()` (httpx's and the Tuya OpenAPI client's way, the kit's)."""

    async def aclose(self) -> None: ...


# a close function (sync or async), a client with `aclose()`, or None for a client this process has not
CloseStep = Callable[[], Awaitable[object] | object] | AsyncClosable | None


def pulsar_client_options(settings: ServiceSettings) -> dict[str, Any]:
    """PulsarBroker's `authentication` and `client_options` for a broker with token authentication and TLS
    (nothing for a plain local one)."""
    options: dict[str, Any] = {}
    token = settings.pulsar_auth_token.get_secret_value()
    if token:
        options["authentication"] = pulsar.AuthenticationToken(token)
    if settings.pulsar_tls_trust_certs_file:
        options["client_options"] = {"tls_trust_certs_file_path": settings.pulsar_tls_trust_certs_file}
    return options


def pulsar_broker(settings: ServiceSettings, **broker_options: Any) -> PulsarBroker:
    """The service's broker at `FLEET_PULSAR_URL`, authenticated and trusting the configured CA;
    `broker_options` are PulsarBroker's own (producer_options, log_level, ...)."""
    return PulsarBroker(settings.pulsar_url, **pulsar_client_options(settings), **broker_options)


def declare_publishers(broker: PulsarBroker, *published: Topic[Any]) -> None:
    """Declare the topics a service publishes (through its outbox relay), for the AsyncAPI document: name,
    payload schema and description, all from the topic registry."""
    for topic in published:
        broker.publisher(topic.name, schema=topic.schema, description=topic.description)


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
