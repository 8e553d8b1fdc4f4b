"""Prometheus metrics for PulsarBroker via FastStream's PrometheusMiddleware.

Usage: `PulsarBroker(url, middlewares=[PulsarPrometheusMiddleware(registry=registry)])`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from faststream._internal.constants import EMPTY
from faststream.prometheus import ConsumeAttrs, MetricsSettingsProvider
from faststream.prometheus.middleware import PrometheusMiddleware

from .message import PulsarPublishCommand

if TYPE_CHECKING:
    import pulsar
    from faststream.message import StreamMessage
    from prometheus_client import CollectorRegistry


class PulsarMetricsSettingsProvider(MetricsSettingsProvider["pulsar.Message", PulsarPublishCommand]):
    __slots__ = ("messaging_system",)

    def __init__(self) -> None:
        self.messaging_system = "pulsar"

    def get_consume_attrs_from_message(self, msg: StreamMessage[pulsar.Message]) -> ConsumeAttrs:
        return {
            "destination_name": str(msg.raw_message.topic_name()),
            "message_size": len(msg.body),
            "messages_count": 1,
        }

    def get_publish_destination_name_from_cmd(self, cmd: PulsarPublishCommand) -> str:
        return cmd.destination


class PulsarPrometheusMiddleware(PrometheusMiddleware["pulsar.Message", PulsarPublishCommand]):
    def __init__(
        self,
        *,
        registry: CollectorRegistry,
        app_name: str = EMPTY,
        metrics_prefix: str = "faststream",
        received_messages_size_buckets: Sequence[float] | None = None,
        custom_labels: dict[str, str | Callable[[Any], str]] | None = None,
    ) -> None:
        super().__init__(
            settings_provider_factory=lambda _: PulsarMetricsSettingsProvider(),
            registry=registry,
            app_name=app_name,
            metrics_prefix=metrics_prefix,
            received_messages_size_buckets=received_messages_size_buckets,
            custom_labels=custom_labels,
        )
