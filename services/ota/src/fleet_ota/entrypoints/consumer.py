"""The FastStream subscriber of the device topic (KeyShared by device id: one device's events in order) and
the publishers of ota's own topics (declared for the AsyncAPI document; the outbox relay publishes them).

ota reads presence (offline devices wait, their timeout paused) and OTA progress of its own Tuya project's
devices, and feeds its device directory from them and from activations (`device.bound`): a device heard
from is noted with its product and region (the event's), its activation time, and its versions are fetched
from the OpenAPI by the upkeep loop (again once an upgrade ended). Every other device event is acked unread.
A message is acked once its handler returns (the write is durable); a failing handler nacks it for
redelivery, and after `max_redeliveries` it goes to ota's dead-letter topic.
"""

from __future__ import annotations

from datetime import UTC, datetime

from fleet_contracts import topics
from fleet_contracts.device import (
    DeviceBoundEvent,
    DeviceEvent,
    DeviceOfflineEvent,
    DeviceOnlineEvent,
    DeviceOtaProgressedEvent,
    OtaUpgradeStatus,
    UnknownTuyaMessage,
)
from fleet_ota.service_layer import handlers as h
from fleet_ota.service_layer.handlers import Ports
from fleet_shared.pulsar import PulsarBroker, PulsarMessage
from fleet_shared.pulsar.device_events import DeviceSubscription, subscribe_device_events
from fleet_shared.service.clients import declare_publishers

# an upgrade ended (either way): what the device runs may have changed
_ENDED = frozenset({OtaUpgradeStatus.DONE, OtaUpgradeStatus.FAILED, OtaUpgradeStatus.TIMED_OUT})


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
                ended = event.data.upgrade_status in _ENDED
                await _seen(event, activated=False, changed=ended)
            case DeviceOnlineEvent():
                await h.on_device_presence(event.data.device_id, True, ports)
                await _seen(event, activated=False, changed=False)
            case DeviceOfflineEvent():
                await h.on_device_presence(event.data.device_id, False, ports)
                await _seen(event, activated=False, changed=False)
            case DeviceBoundEvent():  # an activation: the device joined a home
                await _seen(event, activated=True, changed=True)

    async def _seen(event: DeviceEvent, *, activated: bool, changed: bool) -> None:
        data = event.data
        assert not isinstance(data, UnknownTuyaMessage)
        at = datetime.fromtimestamp(data.origin.push_time_ms / 1000, UTC)
        await h.on_device_seen(
            data.device_id, data.product_id, event.region, at, ports, activated=activated, changed=changed
        )

    subscribe_device_events(
        broker,
        on_device_event,
        subscription,
        dead_letter=topics.OTA_DEAD_LETTER,
        # another Tuya project's device: none of our upgrades (checked before the full decode)
        tenant=ports.tenant,
    )
