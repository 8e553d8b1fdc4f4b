"""The FastStream subscriber of ingest's device topic (KeyShared by device id): `bindUser` /
`deviceBindSpace` bindings feed the sessions their token names, removals and unbindings feed the owners.

Handled messages are acked once the session write is durable (the handler returns); a failure nacks the
message for redelivery and, after `max_redeliveries`, the dead-letter topic. Handlers are idempotent, so a
redelivery after a crash changes nothing already applied.
"""

from __future__ import annotations

import logging
from typing import Annotated

from faststream.middlewares import AckPolicy
from pydantic import ValidationError

from fleet_contracts import topics
from fleet_contracts.pairing import PairingEvent
from fleet_pairing.ports import BindingModes, DeviceOwners, SessionRepository
from fleet_pairing.service_layer.handlers import on_device_event
from fleet_shared.pulsar import (
    ConsumerType,
    DeadLetter,
    InitialPosition,
    InlineContext,
    PulsarBroker,
    PulsarMessage,
)

log = logging.getLogger(__name__)


def register(
    broker: PulsarBroker,
    *,
    sessions: SessionRepository,
    owners: DeviceOwners,
    binding_modes: BindingModes,
    subscription: str,
    max_redeliveries: int,
    receiver_queue_size: int,
    max_workers: int,
    initial_position: str = "latest",
) -> None:
    # declared for the AsyncAPI document; the outbox relay publishes through the broker
    broker.publisher(
        topics.PAIRING_EVENTS.name, schema=PairingEvent, description=topics.PAIRING_EVENTS.description
    )

    @broker.subscriber(
        topics.DEVICE_EVENTS.name,
        subscription=subscription,
        subscription_type=ConsumerType.KeyShared,
        initial_position=InitialPosition.Earliest
        if initial_position == "earliest"
        else InitialPosition.Latest,
        dead_letter=DeadLetter(max_redeliveries=max_redeliveries, topic=topics.PAIRING_DEAD_LETTER.name),
        receiver_queue_size=receiver_queue_size,
        max_workers=max_workers,
        ack_policy=AckPolicy.NACK_ON_ERROR,
        description=topics.DEVICE_EVENTS.description,
    )
    async def on_device_message(message: Annotated[PulsarMessage, InlineContext("message")]) -> None:
        try:
            event = topics.DEVICE_EVENTS.decode(message.body)
        except (ValidationError, ValueError) as e:
            log.warning("undecodable device event dead-lettered: %s", str(e)[:300])
            await message.reject()
            return
        await on_device_event(event, sessions=sessions, owners=owners, binding_modes=binding_modes)
