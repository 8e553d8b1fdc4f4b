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
from fleet_contracts.status import PresenceChangedEvent, ShadowChangedEvent
from fleet_shared.pulsar import PulsarBroker, PulsarMessage, subscribe_device_events
from fleet_status.service_layer.handlers import handle_device_event
from fleet_status.service_layer.writer import ShadowWriter

log = logging.getLogger(__name__)


def register(
    broker: PulsarBroker,
    writer: ShadowWriter,
    *,
    subscription: str,
    max_redeliveries: int,
    receiver_queue_size: int,
    tenant: str,
    initial_position: str = "earliest",
) -> None:
    broker.publisher(
        topics.STATUS_SHADOW_EVENTS.name,
        schema=ShadowChangedEvent,
        description=topics.STATUS_SHADOW_EVENTS.description,
    )
    broker.publisher(
        topics.STATUS_PRESENCE_EVENTS.name,
        schema=PresenceChangedEvent,
        description=topics.STATUS_PRESENCE_EVENTS.description,
    )

    async def handle(event: DeviceEvent, message: PulsarMessage) -> None:
        await handle_device_event(event, message, writer)

    # MANUAL: the writer acks once the batch holding the message is durable, not when this returns.
    subscribe_device_events(
        broker,
        handle,
        subscription=subscription,
        dead_letter=topics.STATUS_DEAD_LETTER,
        max_redeliveries=max_redeliveries,
        receiver_queue_size=receiver_queue_size,
        initial_position=initial_position,
        ack_policy=AckPolicy.MANUAL,
        tenant=tenant,
    )
