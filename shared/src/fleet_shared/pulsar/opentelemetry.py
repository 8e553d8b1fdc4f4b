"""OpenTelemetry for PulsarBroker: W3C trace context travels in Pulsar message properties.

Usage: `PulsarBroker(url, middlewares=[PulsarTelemetryMiddleware(tracer_provider=provider)])`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from faststream.opentelemetry import TelemetrySettingsProvider
from faststream.opentelemetry.consts import MESSAGING_DESTINATION_PUBLISH_NAME
from faststream.opentelemetry.middleware import TelemetryMiddleware
from opentelemetry.semconv.trace import SpanAttributes

from .message import PulsarPublishCommand

if TYPE_CHECKING:
    import pulsar
    from faststream.message import StreamMessage
    from opentelemetry.metrics import Meter, MeterProvider
    from opentelemetry.trace import TracerProvider

MESSAGING_PULSAR_KEY = "messaging.pulsar.message.key"
MESSAGING_PULSAR_SUBSCRIPTION = "messaging.pulsar.subscription"


class PulsarTelemetrySettingsProvider(TelemetrySettingsProvider["pulsar.Message", PulsarPublishCommand]):
    """Span attributes per OpenTelemetry's messaging conventions, `messaging.system = pulsar`."""

    __slots__ = ("messaging_system",)

    def __init__(self) -> None:
        self.messaging_system = "pulsar"

    def get_consume_attrs_from_message(self, msg: StreamMessage[pulsar.Message]) -> dict[str, Any]:
        raw = msg.raw_message
        attrs: dict[str, Any] = {
            SpanAttributes.MESSAGING_SYSTEM: self.messaging_system,
            SpanAttributes.MESSAGING_MESSAGE_ID: msg.message_id,
            SpanAttributes.MESSAGING_MESSAGE_CONVERSATION_ID: msg.correlation_id,
            SpanAttributes.MESSAGING_MESSAGE_PAYLOAD_SIZE_BYTES: len(msg.body),
            MESSAGING_DESTINATION_PUBLISH_NAME: str(raw.topic_name()),
        }
        if key := raw.partition_key():
            attrs[MESSAGING_PULSAR_KEY] = key
        return attrs

    def get_consume_destination_name(self, msg: StreamMessage[pulsar.Message]) -> str:
        return str(msg.raw_message.topic_name())

    def get_publish_attrs_from_cmd(self, cmd: PulsarPublishCommand) -> dict[str, Any]:
        attrs: dict[str, Any] = {
            SpanAttributes.MESSAGING_SYSTEM: self.messaging_system,
            SpanAttributes.MESSAGING_DESTINATION_NAME: cmd.destination,
            SpanAttributes.MESSAGING_MESSAGE_CONVERSATION_ID: cmd.correlation_id,
        }
        if cmd.key:
            attrs[MESSAGING_PULSAR_KEY] = cmd.key
        return attrs

    def get_publish_destination_name(self, cmd: PulsarPublishCommand) -> str:
        return cmd.destination


class PulsarTelemetryMiddleware(TelemetryMiddleware[PulsarPublishCommand]):
    """`TelemetryMiddleware` preset with the Pulsar settings provider."""

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        meter: Meter | None = None,
        include_messages_counters: bool = True,
    ) -> None:
        super().__init__(
            settings_provider_factory=lambda _: PulsarTelemetrySettingsProvider(),
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
            meter=meter,
            include_messages_counters=include_messages_counters,
        )
