"""The subscriber of ingest's device topic (KeyShared by device id; `fleet_shared.pulsar`'s one way):
`bindUser` / `deviceBindSpace` bindings feed the sessions their token names, removals and unbindings feed
the owners. A message is acked once its write is durable (the handler returns); a failure nacks it for
redelivery and, after `max_redeliveries`, pairing's dead-letter topic. Handlers are idempotent, so a
redelivery after a crash changes nothing already applied.
"""

from __future__ import annotations

from fleet_contracts import topics
from fleet_contracts.device import DeviceEvent
from fleet_pairing.ports import BindingModes, DeviceOwners, SessionRepository
from fleet_pairing.service_layer.handlers import on_device_event
from fleet_shared.pulsar import DeviceSubscription, PulsarBroker, PulsarMessage, subscribe_device_events
from fleet_shared.service.clients import declare_publishers


def register(
    broker: PulsarBroker,
    *,
    sessions: SessionRepository,
    owners: DeviceOwners,
    binding_modes: BindingModes,
    subscription: DeviceSubscription,
    tenant: str,
) -> None:
    # declared for the AsyncAPI document; the outbox relay publishes through the broker
    declare_publishers(broker, topics.PAIRING_EVENTS)

    async def handle(event: DeviceEvent, _: PulsarMessage) -> None:
        await on_device_event(event, sessions=sessions, owners=owners, binding_modes=binding_modes)

    # Another project's devices on a shared device topic are acked and skipped: their tokens and owners
    # are not this project's to record.
    subscribe_device_events(
        broker, handle, subscription, dead_letter=topics.PAIRING_DEAD_LETTER, tenant=tenant
    )
