"""The FastStream subscriber of the device topic (KeyShared by device id) and the publishers of status's own
topics (declared for the AsyncAPI document; the outbox relay publishes through the broker)."""

from __future__ import annotations

import logging
from typing import Annotated

from faststream.middlewares import AckPolicy
from pydantic import ValidationError

from fleet_contracts import topics
from fleet_contracts.status import PresenceChangedEvent, ShadowChangedEvent
from fleet_shared.pulsar import (
    ConsumerType,
    DeadLetter,
    InitialPosition,
    InlineContext,
    PulsarBroker,
    PulsarMessage,
)
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

    # MANUAL: the writer acks once the batch holding the message is durable, not when this returns.
    @broker.subscriber(
        topics.DEVICE_EVENTS.name,
        subscription=subscription,
        subscription_type=ConsumerType.KeyShared,
        initial_position=InitialPosition.Earliest
        if initial_position == "earliest"
        else InitialPosition.Latest,
        dead_letter=DeadLetter(max_redeliveries=max_redeliveries, topic=topics.STATUS_DEAD_LETTER.name),
        receiver_queue_size=receiver_queue_size,
        ack_policy=AckPolicy.MANUAL,
        description=topics.DEVICE_EVENTS.description,
    )
    async def on_device_event(message: Annotated[PulsarMessage, InlineContext("message")]) -> None:
        try:
            event = topics.DEVICE_EVENTS.decode(message.body)
        except (ValidationError, ValueError) as e:
            log.warning("undecodable device event dead-lettered: %s", str(e)[:300])
            await message.reject()
            return
        await handle_device_event(event, message, writer)
