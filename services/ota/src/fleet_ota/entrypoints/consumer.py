"""The FastStream subscriber of the device topic (KeyShared by device id: one device's events in order) and
the publishers of ota's own topics (declared for the AsyncAPI document; the outbox relay publishes them).

ota reads presence (offline devices wait, their timeout paused) and OTA progress of its own Tuya project's
devices; every other device event is acked unread. A message is acked once its handler returns (the write
is durable); a failing handler nacks it for redelivery, and after `max_redeliveries` it goes to ota's
dead-letter topic.
"""

from __future__ import annotations

from fleet_contracts import topics
from fleet_contracts.device import (
    DeviceEvent,
    DeviceOfflineEvent,
    DeviceOnlineEvent,
    DeviceOtaProgressedEvent,
)
from fleet_ota.service_layer import handlers as h
from fleet_ota.service_layer.handlers import Ports
from fleet_shared.pulsar import PulsarBroker, PulsarMessage
from fleet_shared.pulsar.device_events import DeviceSubscription, subscribe_device_events
from fleet_shared.service.clients import declare_publishers


def register(
    broker: PulsarBroker,
    ports: Ports,
    subscription: DeviceSubscription,
) -> None:
    declare_publishers(broker, topics.OTA_FIRMWARE_EVENTS, topics.OTA_RELEASE_EVENTS)

    async def on_device_event(event: DeviceEvent, _: PulsarMessage) -> None:
        match event:
            case DeviceOtaProgressedEvent():
                await h.on_ota_progress(event.data, ports)
            case DeviceOnlineEvent():
                await h.on_device_presence(event.data.device_id, True, ports)
            case DeviceOfflineEvent():
                await h.on_device_presence(event.data.device_id, False, ports)

    subscribe_device_events(
        broker,
        on_device_event,
        subscription,
        dead_letter=topics.OTA_DEAD_LETTER,
        # another Tuya project's device: none of our upgrades (checked before the full decode)
        tenant=ports.tenant,
    )
