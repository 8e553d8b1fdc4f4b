"""Routers: group subscribers and publishers (with a topic prefix) and include them into a broker."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from faststream._internal.broker.router import ArgsContainer, BrokerRouter, SubscriberRoute
from faststream._internal.constants import EMPTY
from faststream.middlewares import AckPolicy

from .config import PulsarBrokerConfig
from .registrator import PulsarRegistrator

if TYPE_CHECKING:
    from fast_depends.dependencies import Dependant
    from faststream._internal.basic_types import SendableMessage
    from faststream._internal.types import BrokerMiddleware, CustomCallable


class PulsarRoutePublisher(ArgsContainer):
    """A publisher declared in a route: `PulsarRegistrator.publisher` arguments, applied later."""

    def __init__(self, topic: str, **kwargs: Any) -> None:
        super().__init__(topic, **kwargs)


class PulsarRoute(SubscriberRoute):
    """A subscriber declared as data: `PulsarRoute(handler, "topic", subscription="s")`."""

    def __init__(
        self,
        call: Callable[..., SendableMessage] | Callable[..., Awaitable[SendableMessage]],
        topic: str | Sequence[str] = (),
        *,
        subscription: str,
        publishers: Iterable[PulsarRoutePublisher] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(call, topic, subscription=subscription, publishers=publishers, **kwargs)


class PulsarRouter(PulsarRegistrator, BrokerRouter[Any, PulsarBrokerConfig]):
    """A group of Pulsar endpoints; `prefix` is prepended to every topic (a tenant/namespace, say)."""

    def __init__(
        self,
        prefix: str = "",
        handlers: Iterable[PulsarRoute] = (),
        *,
        dependencies: Sequence[Dependant] = (),
        middlewares: Sequence[BrokerMiddleware[Any, Any]] = (),
        routers: Iterable[PulsarRegistrator] = (),
        parser: CustomCallable | None = None,
        decoder: CustomCallable | None = None,
        include_in_schema: bool | None = None,
        ack_policy: AckPolicy = EMPTY,
    ) -> None:
        super().__init__(
            handlers=handlers,
            config=PulsarBrokerConfig(
                prefix=prefix,
                ack_policy=ack_policy,
                broker_dependencies=dependencies,
                broker_middlewares=middlewares,
                broker_parser=parser,
                broker_decoder=decoder,
                include_in_schema=include_in_schema,
            ),
            routers=routers,
        )
