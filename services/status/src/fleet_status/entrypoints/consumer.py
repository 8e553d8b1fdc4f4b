"""The FastStream subscriber of the device topic (KeyShared by device id) and the publishers of status's own
topics (declared for the AsyncAPI document; the outbox relay publishes through the broker)."""

from __future__ import annotations

import logging

from faststream.middlewares import AckPolicy

from fleet_contracts import topics
from fleet_contracts.device import DeviceEvent
from fleet_shared.pulsar import DeviceSubscription, PulsarBroker, PulsarMessage, subscribe_device_events
from fleet_shared.service.clients import declare_publishers
from fleet_status.service_layer.handlers import handle_device_event
from fleet_status.service_layer.writer import ShadowWriter

log = logging.getLogger(__name__)


def register(
    broker: PulsarBroker,
    writer: ShadowWriter,
    subscription: DeviceSubscription,
) -> None:
    declare_publishers(broker, topics.STATUS_SHADOW_EVENTS, topics.STATUS_PRESENCE_EVENTS)

    async def handle(event: DeviceEvent, message: PulsarMessage) -> None:
        await handle_device_event(event, message, writer)

    # MANUAL: the writer acks once the batch holding the message is durable, not when this returns.
    subscribe_device_events(
        broker, handle, subscription, dead_letter=topics.STATUS_DEAD_LETTER, ack_policy=AckPolicy.MANUAL
    )
