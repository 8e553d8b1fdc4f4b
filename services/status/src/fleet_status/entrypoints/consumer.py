"""The device topic's subscription (KeyShared by device id, received in batches: `DeviceEventBatches`) and the
publishers of status's own topics (declared for the AsyncAPI document; the outbox relay publishes them).

status keeps the shadows of its own Tuya project's devices (`tenant`): another project's events on a shared
topic are acked unread. Merged, they would fill the database with shadows nobody asked for and make the
writer fetch DP schemas the OpenAPI cannot give for devices not in the project, holding their messages
unacked meanwhile (under KeyShared that holds back the device keys of a replica that joins).
"""

from __future__ import annotations

import logging

from fleet_contracts import topics
from fleet_contracts.device import DeviceEvent
from fleet_shared.pulsar import DeviceSubscription, PulsarBroker
from fleet_shared.pulsar.device_batches import DeviceEventBatches, DeviceMessage
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
) -> DeviceEventBatches:
    """The device events' consumer, started by the service once the writer runs (`Status.start`)."""
    declare_publishers(broker, topics.STATUS_SHADOW_EVENTS, topics.STATUS_PRESENCE_EVENTS)

    async def handle(event: DeviceEvent, message: DeviceMessage) -> None:
        # the writer acks once the batch holding the message is durable, not when this returns
        await handle_device_event(event, message, writer)

    return DeviceEventBatches(
        broker, handle, subscription, dead_letter=topics.STATUS_DEAD_LETTER, tenant=tenant
    )
