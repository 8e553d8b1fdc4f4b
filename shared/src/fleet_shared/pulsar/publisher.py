"""Publishers: a topic, its default key and properties, and how its producer batches."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from faststream._internal.configs import PublisherSpecificationConfig, PublisherUsecaseConfig
from faststream._internal.endpoint.publisher import PublisherSpecification, PublisherUsecase
from faststream.response.publish_type import PublishType
from faststream.specification.asyncapi.utils import resolve_payloads
from faststream.specification.schema import Message, Operation, PublisherSpec
from typing_extensions import override

from .config import PulsarBrokerConfig
from .message import PulsarPublishCommand

if TYPE_CHECKING:
    import pulsar
    from faststream._internal.basic_types import SendableMessage
    from faststream._internal.types import PublisherMiddleware
    from faststream.response.response import PublishCommand

    from .message import PulsarMessage
    from .options import ProducerOptions


@dataclass(kw_only=True)
class PulsarPublisherSpecificationConfig(PublisherSpecificationConfig):
    topic: str


@dataclass(kw_only=True)
class PulsarPublisherConfig(PublisherUsecaseConfig):
    _outer_config: PulsarBrokerConfig = field(default_factory=PulsarBrokerConfig)

    topic: str
    key: str | None = None
    headers: dict[str, str] | None = None
    producer_options: ProducerOptions | None = None


class PulsarPublisherSpecification(
    PublisherSpecification[PulsarBrokerConfig, PulsarPublisherSpecificationConfig],
):
    __slots__ = ()

    @property
    def topic(self) -> str:
        return f"{self._outer_config.prefix}{self.config.topic}"

    @property
    def name(self) -> str:
        return self.config.title_ or f"{self.topic}:Publisher"

    def get_schema(self) -> dict[str, PublisherSpec]:
        payloads = self.get_payloads()
        return {
            self.name: PublisherSpec(
                address=self.topic,
                description=self.config.description_,
                operation=Operation(
                    message=Message(
                        title=f"{self.name}:Message",
                        payload=resolve_payloads(payloads, "Publisher"),
                    ),
                    bindings=None,
                ),
                bindings=None,
            ),
        }


class PulsarPublisher(PublisherUsecase):
    """Publishes to one topic; handler results go through `_publish` with the publisher's defaults."""

    _outer_config: PulsarBrokerConfig

    def __init__(self, config: PulsarPublisherConfig, specification: PulsarPublisherSpecification) -> None:
        super().__init__(config, cast("PublisherSpecification[Any, Any]", specification))
        self._topic = config.topic
        self.key = config.key
        self.headers = config.headers or {}
        self.producer_options = config.producer_options

    @property
    def topic(self) -> str:
        return f"{self._outer_config.prefix}{self._topic}"

    @override
    async def publish(
        self,
        message: SendableMessage,
        topic: str = "",
        *,
        key: str | None = None,
        ordering_key: str | None = None,
        event_time: datetime | int | None = None,
        deliver_after: timedelta | None = None,
        headers: dict[str, str] | None = None,
        correlation_id: str | None = None,
        reply_to: str = "",
    ) -> pulsar.MessageId:
        """Send and wait until Pulsar has persisted the message; returns its message id."""
        cmd = PulsarPublishCommand(
            message,
            topic=topic or self.topic,
            key=key or self.key,
            ordering_key=ordering_key,
            event_time=event_time,
            deliver_after=deliver_after,
            headers=self.headers | (headers or {}),
            correlation_id=correlation_id or self._outer_config.id_generator(),
            reply_to=reply_to,
            producer_options=self.producer_options,
            _publish_type=PublishType.PUBLISH,
        )
        return await self._basic_publish(cmd, producer=self._outer_config.producer, _extra_middlewares=())

    @override
    async def _publish(
        self,
        cmd: PublishCommand,
        *,
        _extra_middlewares: Iterable[PublisherMiddleware],
    ) -> None:
        """A handler's return value: the response's key wins over the publisher's default."""
        pulsar_cmd = PulsarPublishCommand.from_cmd(cmd)
        pulsar_cmd.destination = self.topic
        pulsar_cmd.key = pulsar_cmd.key or self.key
        pulsar_cmd.producer_options = pulsar_cmd.producer_options or self.producer_options
        pulsar_cmd.add_headers(self.headers, override=False)
        await self._basic_publish(
            pulsar_cmd, producer=self._outer_config.producer, _extra_middlewares=_extra_middlewares
        )

    @override
    async def request(
        self,
        message: SendableMessage,
        topic: str = "",
        *,
        key: str | None = None,
        headers: dict[str, str] | None = None,
        correlation_id: str | None = None,
        timeout: float = 30.0,
    ) -> PulsarMessage:
        cmd = PulsarPublishCommand(
            message,
            topic=topic or self.topic,
            key=key or self.key,
            headers=self.headers | (headers or {}),
            correlation_id=correlation_id or self._outer_config.id_generator(),
            timeout=timeout,
            producer_options=self.producer_options,
            _publish_type=PublishType.REQUEST,
        )
        msg: PulsarMessage = await self._basic_request(cmd, producer=self._outer_config.producer)
        return msg
