"""The FastStream subscriber of the device topic (KeyShared by device id) and the publishers of status's own
topics (declared for the AsyncAPI document; the outbox relay publishes through the broker).

status keeps the shadows of its own Tuya project's devices (`tenant`): another project's events on a shared
topic are acked unread. Merged, they would fill the database with shadows nobody asked for and make the
writer fetch DP schemas the OpenAPI cannot give for devices not in the project, holding their messages
unacked meanwhile (under KeyShared that holds back the device keys of a replica that joins).
"""

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
    *,
    tenant: str,
) -> None:
    declare_publishers(broker, topics.STATUS_SHADOW_EVENTS, topics.STATUS_PRESENCE_EVENTS)

    async def handle(event: DeviceEvent, message: PulsarMessage) -> None:
        await handle_device_event(event, message, writer)

    # MANUAL: the writer acks once the batch holding the message is durable, not when this returns.
    subscribe_device_events(
        broker,
        handle,
        subscription,
        dead_letter=topics.STATUS_DEAD_LETTER,
        ack_policy=AckPolicy.MANUAL,
        tenant=tenant,
    )
