"""Each consuming service's subscription to the device topic comes from its own `FLEET_<SVC>_...` settings
as one value, which its consumer passes to `subscribe_device_events` whole."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from fleet_contracts import topics
from fleet_contracts.device import DeviceEvent
from fleet_ota.settings import OtaSettings
from fleet_pairing.settings import PairingSettings
from fleet_shared.pulsar import (
    ConsumerType,
    DeadLetter,
    DeviceSubscription,
    InitialPosition,
    PulsarBroker,
    PulsarMessage,
    PulsarSubscriber,
    subscribe_device_events,
)
from fleet_status.settings import StatusSettings

pytestmark = pytest.mark.unit


def test_defaults_per_service() -> None:
    assert StatusSettings().device_subscription == DeviceSubscription("status", 5, 2000, "earliest", 1)
    assert PairingSettings().device_subscription == DeviceSubscription("pairing", 5, 1000, "latest", 32)
    # ota's starts at the latest: earlier progress is of upgrades it never commanded
    assert OtaSettings().device_subscription == DeviceSubscription("ota", 5, 1000, "latest", 1)


def test_the_environment_reaches_the_subscription(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "FLEET_PAIRING_SUBSCRIPTION": "pairing-blue",
        "FLEET_PAIRING_MAX_REDELIVERIES": "2",
        "FLEET_PAIRING_RECEIVER_QUEUE_SIZE": "50",
        "FLEET_PAIRING_INITIAL_POSITION": "earliest",
        "FLEET_PAIRING_MAX_CONCURRENCY": "4",
    }.items():
        monkeypatch.setenv(name, value)
    assert PairingSettings().device_subscription == DeviceSubscription("pairing-blue", 2, 50, "earliest", 4)


def test_an_unknown_initial_position_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_STATUS_INITIAL_POSITION", "middle")
    with pytest.raises(ValidationError, match="initial_position"):
        StatusSettings()


def test_the_subscriber_is_configured_from_it() -> None:
    broker = PulsarBroker()

    async def handle(event: DeviceEvent, message: PulsarMessage) -> None: ...

    subscription = DeviceSubscription("pairing", 2, 50, "latest", 4)
    subscribe_device_events(broker, handle, subscription, dead_letter=topics.PAIRING_DEAD_LETTER)
    [subscriber] = broker.subscribers
    assert isinstance(subscriber, PulsarSubscriber)
    config = subscriber.config
    assert (config.topics, config.subscription) == ((topics.DEVICE_EVENTS.name,), "pairing")
    assert config.subscription_type == ConsumerType.KeyShared
    assert config.initial_position == InitialPosition.Latest
    assert config.dead_letter == DeadLetter(max_redeliveries=2, topic=topics.PAIRING_DEAD_LETTER.name)
    assert (config.receiver_queue_size, config.max_workers) == (50, 4)
