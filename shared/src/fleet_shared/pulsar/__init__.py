"""A FastStream broker for Apache Pulsar, on pulsar-client's asyncio API.

    broker = PulsarBroker("pulsar://localhost:6650")

    @broker.subscriber("device-events", subscription="status", subscription_type=ConsumerType.KeyShared,
                       dead_letter=DeadLetter(max_redeliveries=5), max_workers=8)
    @broker.publisher("device-changes")
    async def on_event(event: DeviceEvent) -> PulsarResponse:
        return PulsarResponse(Changed(...), key=event.device_id)

Unit tests run it in memory with `TestPulsarBroker(broker)`; tracing with `PulsarTelemetryMiddleware`.
"""

from pulsar import BatchingType, CompressionType, ConsumerKeySharedPolicy, ConsumerType, InitialPosition

from .broker import PulsarBroker
from .codec import OrjsonCodec
from .confirmed import Confirmations, ConfirmedSender, Send, SendFailedError
from .context import InlineContext
from .device_events import DeviceEventHandler, DeviceSubscription, subscribe_device_events
from .message import PulsarMessage, PulsarPublishCommand, PulsarResponse
from .options import DeadLetter, ProducerOptions
from .outbox import OutboxPublisher
from .publisher import PulsarPublisher
from .receiver import acknowledge_cumulative, receive_ready
from .router import PulsarRoute, PulsarRoutePublisher, PulsarRouter
from .subscriber import (
    DLQ_ERROR,
    DLQ_ERROR_TYPE,
    DLQ_ORIGINAL_MESSAGE_ID,
    DLQ_ORIGINAL_TOPIC,
    DLQ_REDELIVERY_COUNT,
    DLQ_SUBSCRIPTION,
    PulsarSubscriber,
)
from .testing import TestPulsarBroker

__all__ = (
    "DLQ_ERROR",
    "DLQ_ERROR_TYPE",
    "DLQ_ORIGINAL_MESSAGE_ID",
    "DLQ_ORIGINAL_TOPIC",
    "DLQ_REDELIVERY_COUNT",
    "DLQ_SUBSCRIPTION",
    "BatchingType",
    "CompressionType",
    "Confirmations",
    "ConfirmedSender",
    "ConsumerKeySharedPolicy",
    "ConsumerType",
    "DeadLetter",
    "DeviceEventHandler",
    "DeviceSubscription",
    "InitialPosition",
    "InlineContext",
    "OrjsonCodec",
    "OutboxPublisher",
    "ProducerOptions",
    "PulsarBroker",
    "PulsarMessage",
    "PulsarPublishCommand",
    "PulsarPublisher",
    "PulsarResponse",
    "PulsarRoute",
    "PulsarRoutePublisher",
    "PulsarRouter",
    "PulsarSubscriber",
    "Send",
    "SendFailedError",
    "TestPulsarBroker",
    "acknowledge_cumulative",
    "receive_ready",
    "subscribe_device_events",
)
