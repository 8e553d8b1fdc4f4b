"""The one way a domain service consumes ingest's device topic: KeyShared by device id (each device's events
in order, devices spread over the replicas), the service's own dead-letter topic after `max_redeliveries`,
and a body that is not a device event dead-lettered at once (a redelivery would not make it one).

    pairing = DeviceSubscription("pairing", initial_position="latest", max_workers=32)
    subscribe_device_events(broker, handle, pairing, dead_letter=topics.PAIRING_DEAD_LETTER)

`handle(event, message)` settles per the ack policy: NACK_ON_ERROR acks when it returns and nacks when it
raises; MANUAL leaves acking to it (status acks once its batch is durable).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import orjson
from faststream.middlewares import AckPolicy
from pulsar import ConsumerType, InitialPosition
from pydantic import ValidationError

from fleet_contracts import topics
from fleet_contracts.device import DeviceEvent

from .broker import PulsarBroker
from .context import InlineContext
from .message import PulsarMessage
from .options import DeadLetter

log = logging.getLogger(__name__)

DeviceEventHandler = Callable[[DeviceEvent, PulsarMessage], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class DeviceSubscription:
    """A service's subscription to the device topic, as its settings configure it: the subscription's name
    (shared by the service's replicas), redeliveries before the dead-letter topic, the consumer's prefetch,
    where a new subscription starts (`earliest` or `latest`) and how many devices' events one process
    handles at once (one device's stay in order)."""

    name: str
    max_redeliveries: int = 5
    receiver_queue_size: int = 1000
    initial_position: Literal["earliest", "latest"] = "earliest"
    max_workers: int = 1


def of_tenant(body: bytes, tenant: str) -> bool:
    """Whether the event is about this Tuya project's devices (its envelope's `tenant`). A body that does not
    parse counts as ours, so the decoder dead-letters it. A JSON parse is far cheaper than validating the
    whole event."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return True
    return not isinstance(parsed, dict) or parsed.get("tenant") == tenant


def subscribe_device_events(
    broker: PulsarBroker,
    handle: DeviceEventHandler,
    subscription: DeviceSubscription,
    *,
    dead_letter: topics.Topic[Any],
    ack_policy: AckPolicy = AckPolicy.NACK_ON_ERROR,
    tenant: str | None = None,
) -> None:
    """`tenant`: acknowledge other Tuya projects' events unread (a deployment may share the topic)."""
    s = subscription

    @broker.subscriber(
        topics.DEVICE_EVENTS.name,
        subscription=s.name,
        subscription_type=ConsumerType.KeyShared,
        initial_position=InitialPosition.Earliest
        if s.initial_position == "earliest"
        else InitialPosition.Latest,
        dead_letter=DeadLetter(max_redeliveries=s.max_redeliveries, topic=dead_letter.name),
        receiver_queue_size=s.receiver_queue_size,
        max_workers=s.max_workers,
        ack_policy=ack_policy,
        description=topics.DEVICE_EVENTS.description,
    )
    async def on_device_event(message: Annotated[PulsarMessage, InlineContext("message")]) -> None:
        if tenant is not None and not of_tenant(message.body, tenant):
            return
        try:
            event = topics.DEVICE_EVENTS.decode(message.body)
        except (ValidationError, ValueError) as e:
            log.warning("undecodable device event dead-lettered: %s", str(e)[:300])
            await message.reject()
            return
        await handle(event, message)
