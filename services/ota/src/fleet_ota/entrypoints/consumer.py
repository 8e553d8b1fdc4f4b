"""The FastStream subscriber of the device topic (KeyShared by device id: one device's events in order) and
the publishers of ota's own topics (declared for the AsyncAPI document; the outbox relay publishes them).

ota reads presence (offline devices wait, their timeout paused) and OTA progress of its own Tuya project's
devices; every other device event is acked unread. A message is acked once its handler returns (the write
is durable); a failing handler nacks it for redelivery, and after `max_redeliveries` it goes to ota's
dead-letter topic.
"""

from __future__ import annotations

import logging
from typing import Annotated

import orjson
from pydantic import ValidationError

from fleet_contracts import topics
from fleet_contracts.device import DeviceOfflineEvent, DeviceOnlineEvent, DeviceOtaProgressedEvent
from fleet_contracts.ota import FirmwareEvent, ReleaseEvent
from fleet_ota.service_layer import handlers as h
from fleet_ota.service_layer.handlers import Ports
from fleet_shared.pulsar import (
    ConsumerType,
    DeadLetter,
    InitialPosition,
    InlineContext,
    PulsarBroker,
    PulsarMessage,
)

log = logging.getLogger(__name__)


def _of_tenant(body: bytes, tenant: str) -> bool:
    """Whether the event is about the project's devices; a body that does not parse goes on to the decoder
    (which dead-letters it). A JSON parse is far cheaper than validating the whole event."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return True
    return not isinstance(parsed, dict) or parsed.get("tenant") == tenant


def register(
    broker: PulsarBroker,
    ports: Ports,
    *,
    subscription: str,
    max_redeliveries: int,
    receiver_queue_size: int,
) -> None:
    broker.publisher(
        topics.OTA_FIRMWARE_EVENTS.name,
        schema=FirmwareEvent,
        description=topics.OTA_FIRMWARE_EVENTS.description,
    )
    broker.publisher(
        topics.OTA_RELEASE_EVENTS.name, schema=ReleaseEvent, description=topics.OTA_RELEASE_EVENTS.description
    )

    @broker.subscriber(
        topics.DEVICE_EVENTS.name,
        subscription=subscription,
        subscription_type=ConsumerType.KeyShared,
        # a device's earlier progress matters only for upgrades ota commanded, after it subscribed
        initial_position=InitialPosition.Latest,
        dead_letter=DeadLetter(max_redeliveries=max_redeliveries, topic=topics.OTA_DEAD_LETTER.name),
        receiver_queue_size=receiver_queue_size,
        description=topics.DEVICE_EVENTS.description,
    )
    async def on_device_event(message: Annotated[PulsarMessage, InlineContext("message")]) -> None:
        if not _of_tenant(message.body, ports.tenant):
            return  # another Tuya project's device: none of our upgrades (checked before the full decode)
        try:
            event = topics.DEVICE_EVENTS.decode(message.body)
        except (ValidationError, ValueError) as e:
            log.warning("undecodable device event dead-lettered: %s", str(e)[:300])
            await message.reject()
            return
        match event:
            case DeviceOtaProgressedEvent():
                await h.on_ota_progress(event.data, ports)
            case DeviceOnlineEvent():
                await h.on_device_presence(event.data.device_id, True, ports)
            case DeviceOfflineEvent():
                await h.on_device_presence(event.data.device_id, False, ports)
