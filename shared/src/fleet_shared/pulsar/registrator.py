"""`subscriber()` and `publisher()` declarations, shared by the broker and its routers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

import pulsar
from faststream._internal.broker.registrator import Registrator
from faststream._internal.constants import EMPTY
from faststream._internal.endpoint.subscriber.call_item import CallsCollection
from faststream.middlewares import AckPolicy
from typing_extensions import override

from .config import PulsarBrokerConfig
from .publisher import (
    PulsarPublisher,
    PulsarPublisherConfig,
    PulsarPublisherSpecification,
    PulsarPublisherSpecificationConfig,
)
from .subscriber import (
    PulsarSubscriber,
    PulsarSubscriberConfig,
    PulsarSubscriberSpecification,
    PulsarSubscriberSpecificationConfig,
)

if TYPE_CHECKING:
    from fast_depends.dependencies import Dependant
    from faststream._internal.parser import CodecProto
    from faststream._internal.types import BrokerMiddleware, CustomCallable

    from .options import DeadLetter, ProducerOptions


def _as_topics(topic: str | Sequence[str]) -> tuple[str, ...]:
    return (topic,) if isinstance(topic, str) else tuple(topic)


class PulsarRegistrator(Registrator["pulsar.Message", PulsarBrokerConfig]):
    """Declares Pulsar subscribers and publishers."""

    @override
    def subscriber(  # type: ignore[override]
        self,
        topic: str | Sequence[str] = (),
        *,
        subscription: str,
        pattern: str | None = None,
        subscription_type: Any = pulsar.ConsumerType.Shared,
        initial_position: Any = pulsar.InitialPosition.Latest,
        negative_ack_redelivery_delay: float = 1.0,
        dead_letter: DeadLetter | None = None,
        max_workers: int = 1,
        receiver_queue_size: int = 1000,
        consumer_name: str | None = None,
        key_shared_policy: Any = None,
        # FastStream options
        ack_policy: AckPolicy = EMPTY,
        no_reply: bool = False,
        dependencies: Sequence[Dependant] = (),
        parser: CustomCallable | None = None,
        decoder: CustomCallable | None = None,
        codec: CodecProto | None = None,
        persistent: bool = True,
        # AsyncAPI
        title: str | None = None,
        description: str | None = None,
        include_in_schema: bool = True,
    ) -> PulsarSubscriber:
        """Subscribe a handler to a topic, a list of topics, or a regex `pattern` of topics.

        Args:
            topic: a topic name or a list of them (omit when `pattern` is given).
            subscription: the durable subscription name; replicas sharing it share the messages.
            pattern: a regex over full topic names (`persistent://tenant/ns/dev-.*`).
            subscription_type: `pulsar.ConsumerType` (Shared by default: a second replica would fail
                with ConsumerBusy on Pulsar's Exclusive default); KeyShared keeps per-key order.
            initial_position: where a new subscription starts (`pulsar.InitialPosition`).
            negative_ack_redelivery_delay: seconds before a nacked message comes back.
            dead_letter: dead-letter after N redeliveries with the error in the properties.
            max_workers: handlers running at once; one message of a key at a time, in order, so
                per-key order holds under KeyShared, and a slow key holds up no other key. The workers
                hold up to `receiver_queue_size` messages (all keys together) before receiving waits.
            receiver_queue_size: messages the client prefetches (and, with `max_workers`, the workers
                hold); lower it for large payloads.
            consumer_name: the consumer's name in Pulsar's stats.
            key_shared_policy: a `pulsar.ConsumerKeySharedPolicy` for KeyShared subscriptions.
            ack_policy: FastStream's policy; NACK_ON_ERROR by default.
        """
        topics = _as_topics(topic)
        if bool(topics) == bool(pattern):
            raise ValueError("give either topic(s) or a pattern")
        broker_config = cast("PulsarBrokerConfig", self.config)
        calls = CallsCollection["pulsar.Message"]()
        specification = PulsarSubscriberSpecification(
            broker_config,
            PulsarSubscriberSpecificationConfig(
                topics=topics,
                pattern=pattern,
                subscription=subscription,
                title_=title,
                description_=description,
                include_in_schema=include_in_schema,
            ),
            calls,
        )
        config = PulsarSubscriberConfig(
            _outer_config=broker_config,
            _ack_policy=ack_policy,
            no_reply=no_reply,
            topics=topics,
            pattern=pattern,
            subscription=subscription,
            subscription_type=subscription_type,
            initial_position=initial_position,
            negative_ack_redelivery_delay=negative_ack_redelivery_delay,
            dead_letter=dead_letter,
            receiver_queue_size=receiver_queue_size,
            consumer_name=consumer_name,
            key_shared_policy=key_shared_policy,
            max_workers=max_workers,
        )
        sub = PulsarSubscriber(config, specification, calls)
        super().subscriber(sub, persistent=persistent)
        return sub.add_call(
            parser_=parser or self._parser,
            decoder_=decoder or self._decoder,
            codec_=codec,
            dependencies_=dependencies,
        )

    @override
    def publisher(  # type: ignore[override]
        self,
        topic: str,
        *,
        key: str | None = None,
        headers: dict[str, str] | None = None,
        producer_options: ProducerOptions | None = None,
        persistent: bool = True,
        # AsyncAPI
        title: str | None = None,
        description: str | None = None,
        schema: Any | None = None,
        include_in_schema: bool = True,
    ) -> PulsarPublisher:
        """Declare a publisher; as a decorator it publishes the handler's return value.

        Args:
            topic: the topic to publish to.
            key: a default partition key (a `PulsarResponse(key=...)` overrides it per message).
            headers: properties added to every message.
            producer_options: batching, compression and in-flight bounds of this topic's producer
                (the first declaration of a topic wins: producers are cached per topic).
        """
        broker_config = cast("PulsarBrokerConfig", self.config)
        specification = PulsarPublisherSpecification(
            broker_config,
            PulsarPublisherSpecificationConfig(
                topic=topic,
                schema_=schema,
                title_=title,
                description_=description,
                include_in_schema=include_in_schema,
            ),
        )
        config = PulsarPublisherConfig(
            _outer_config=broker_config,
            topic=topic,
            key=key,
            headers=headers,
            producer_options=producer_options,
        )
        pub = PulsarPublisher(config, specification)
        super().publisher(pub, persistent=persistent)
        return pub

    @override
    def include_router(  # type: ignore[override]
        self,
        router: PulsarRegistrator,
        *,
        prefix: str = "",
        dependencies: Sequence[Dependant] = (),
        middlewares: Sequence[BrokerMiddleware[Any, Any]] = (),
        include_in_schema: bool | None = None,
    ) -> None:
        if not isinstance(router, PulsarRegistrator):
            raise TypeError(f"a PulsarBroker includes Pulsar routers only, not {type(router).__name__}")
        super().include_router(
            router,
            prefix=prefix,
            dependencies=dependencies,
            middlewares=middlewares,
            include_in_schema=include_in_schema,
        )
