"""PulsarBroker: FastStream on pulsar-client's asyncio API."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

import pulsar
from fast_depends import dependency_provider
from faststream._internal.broker import BrokerUsecase
from faststream._internal.constants import EMPTY
from faststream._internal.context.repository import ContextRepo
from faststream._internal.di import FastDependsConfig
from faststream.middlewares import AckPolicy
from faststream.response.publish_type import PublishType
from faststream.specification.schema import BrokerSpec
from prometheus_client import REGISTRY, CollectorRegistry
from pulsar import asyncio as pa
from typing_extensions import override

from . import internals
from .config import PulsarBrokerConfig
from .logger import make_pulsar_logger_state
from .message import PulsarMessage, PulsarPublishCommand, new_correlation_id
from .metrics import bus_metrics
from .opentelemetry import telemetry_middlewares
from .producer import PulsarProducer
from .registrator import PulsarRegistrator
from .rpc import default_reply_topic
from .subscriber import PulsarSubscriber

if TYPE_CHECKING:
    from types import TracebackType

    from fast_depends import Provider
    from fast_depends.dependencies import Dependant
    from fast_depends.library.serializer import SerializerProto
    from faststream._internal.basic_types import LoggerProto, SendableMessage
    from faststream._internal.parser import CodecProto
    from faststream._internal.types import BrokerMiddleware, CustomCallable
    from faststream.security import BaseSecurity
    from faststream.specification.schema.extra import Tag, TagDict

    from .options import ProducerOptions


class PulsarBroker(PulsarRegistrator, BrokerUsecase["pulsar.Message", "pa.Client", PulsarBrokerConfig]):
    """A FastStream broker for Apache Pulsar.

    The `pulsar.asyncio.Client` is created in `connect()` (never at import: the client is not fork-safe)
    and closed in `stop()` after the subscribers and producers, on every path: a client callback that
    fires after the event loop has closed aborts the process.
    """

    def __init__(
        self,
        url: str = "pulsar://localhost:6650",
        *,
        authentication: Any = None,
        operation_timeout: float = 30.0,
        connection_timeout: float = 10.0,
        io_threads: int = 1,
        pulsar_logger: Any = None,
        client_options: Mapping[str, Any] | None = None,
        producer_options: ProducerOptions | None = None,
        reply_topic: str | None = None,
        telemetry: bool = True,
        metrics: CollectorRegistry | None = REGISTRY,
        # FastStream options
        graceful_timeout: float | None = 15.0,
        decoder: CustomCallable | None = None,
        parser: CustomCallable | None = None,
        codec: CodecProto | None = None,
        dependencies: Sequence[Dependant] = (),
        middlewares: Sequence[BrokerMiddleware[Any, Any]] = (),
        routers: Iterable[PulsarRegistrator] = (),
        ack_policy: AckPolicy = EMPTY,
        # AsyncAPI
        specification_url: str | None = None,
        protocol_version: str | None = None,
        description: str | None = None,
        tags: Iterable[Tag | TagDict] = (),
        security: BaseSecurity | None = None,
        # logging
        logger: LoggerProto | None = EMPTY,
        log_level: int = logging.INFO,
        # FastDepends
        apply_types: bool = True,
        serializer: SerializerProto | None = EMPTY,
        provider: Provider | None = None,
        context: ContextRepo | None = None,
    ) -> None:
        """Args beyond FastStream's own:

        authentication: a `pulsar.Authentication*` object (token, OAuth2, TLS, basic).
        pulsar_logger: the C++ client's logger; by default warnings and errors to the console
            (a Python `logging.Logger` works too but takes the GIL for every line).
        client_options: any other `pulsar.Client` keyword (TLS files, listener_name, ...).
        producer_options: defaults for every topic's producer (batching, compression, in-flight bound).
        reply_topic: the topic request() replies come back on (a private non-persistent one by default).
        telemetry: publish and process spans with W3C context in message properties (`opentelemetry.py`),
            unless `middlewares` already holds a telemetry middleware.
        metrics: the registry the bus's RED metrics go to (`metrics.py`: per subscription and per topic sent
            to), by default prometheus_client's, which every service serves on `/metrics`; None: none.
        """
        self._url = url
        self._client_kwargs: dict[str, Any] = {
            "authentication": authentication,
            "operation_timeout_seconds": max(1, int(operation_timeout)),
            "connection_timeout_ms": int(connection_timeout * 1000),
            "io_threads": io_threads,
            **(client_options or {}),
        }
        self._pulsar_logger = pulsar_logger
        measured = None if metrics is None else bus_metrics(metrics)
        producer = PulsarProducer(
            parser=parser,
            decoder=decoder,
            default_options=producer_options,
            reply_topic=reply_topic or default_reply_topic(),
            metrics=measured,
        )
        super().__init__(
            routers=routers,
            config=PulsarBrokerConfig(
                producer=producer,
                broker_middlewares=telemetry_middlewares(middlewares) if telemetry else middlewares,
                broker_parser=parser,
                broker_decoder=decoder,
                broker_codec=codec,
                logger=make_pulsar_logger_state(logger=logger, log_level=log_level),
                fd_config=FastDependsConfig(
                    use_fastdepends=apply_types,
                    serializer=serializer,
                    provider=provider or dependency_provider,
                    context=context or ContextRepo(),
                ),
                broker_dependencies=dependencies,
                graceful_timeout=graceful_timeout,
                ack_policy=ack_policy,
                id_generator=new_correlation_id,
                extra_context={"broker": self},
                bus_metrics=measured,
            ),
            specification=BrokerSpec(
                description=description,
                url=[specification_url or url],
                protocol=url.split("://", 1)[0],
                protocol_version=protocol_version or "3.x",
                tags=tags,
                security=security,
            ),
        )

    @property
    def pulsar_producer(self) -> PulsarProducer:
        producer = self.config.broker_config.producer
        assert isinstance(producer, PulsarProducer)
        return producer

    @override
    async def _connect(self) -> pa.Client:
        client = pa.Client(self._url, logger=self._make_pulsar_logger(), **self._client_kwargs)
        self.config.broker_config.connect(client)
        serializer = internals.fast_depends_serializer(self.config.fd_config)
        self.pulsar_producer.connect(client, serializer, self.config.broker_codec)
        return client

    def _make_pulsar_logger(self) -> Any:
        if self._pulsar_logger is not None:
            return self._pulsar_logger
        # Without a logger the C++ client prints every INFO line to stdout.
        return pulsar.ConsoleLogger(pulsar.LoggerLevel.Warn)

    @override
    async def start(self) -> None:
        await self.connect()
        try:
            await super().start()
        except BaseException:
            # A half-started broker still owns a client and consumers: close them before re-raising.
            await self.stop()
            raise

    @override
    async def stop(
        self,
        exc_type: type[BaseException] | None = None,
        exc_val: BaseException | None = None,
        exc_tb: TracebackType | None = None,
    ) -> None:
        """Stop subscribers (finishing in-flight handlers), then flush and close producers, then client."""
        try:
            await super().stop(exc_type, exc_val, exc_tb)
        finally:
            try:
                await self.pulsar_producer.close()
            finally:
                await self._close_client()

    async def _close_client(self) -> None:
        """The client's blocking close, on a worker thread, rather than `await client.close()`.

        The asyncio close hands the C++ client a Python callback, which a thread of the client calls, then
        destroys once everything is shut down: destroying it takes the GIL. When the process exits right
        after the close (a test, a CLI command, a service stopped by SIGTERM), that thread can ask for the GIL
        while the interpreter is already finalizing; CPython then ends the thread, and unwinding it through
        C++ aborts the process: "terminate called without an active exception" (apache/pulsar-client-python
        #256). Another order of closing consumers, producers and client would not help: whichever close
        comes last leaves its callback to a client thread. The blocking close waits on a C++ promise instead,
        so no client thread holds a Python object once it returns. Measured with
        `tests/integration/bus/exit_after_close.py` (start, publish, consume one, stop, exit), 23 runs each,
        interleaved: the asyncio close aborted 3 exits, this one none.
        """
        client, self._connection = self._connection, None
        self.config.broker_config.disconnect()
        if client is None:
            return
        native = internals.native_client(client)
        try:
            await (client.close() if native is None else asyncio.to_thread(native.close))
        except (pa.PulsarException, pulsar.PulsarException) as e:
            self.config.logger.log(f"closing the Pulsar client failed: {e}", logging.WARNING)

    @override
    async def ping(self, timeout: float | None = None) -> bool:
        """Connected producers answer directly; otherwise ask for the metadata of a topic in use."""
        if self._connection is None:
            return False
        if (connected := self.pulsar_producer.is_connected()) is not None:
            return connected
        topic = next((t for s in self.subscribers for t in self._topics_of(s)), None)
        if topic is None:
            return True
        try:
            await asyncio.wait_for(self._connection.get_topic_partitions(topic), timeout or 5.0)
        except (TimeoutError, pa.PulsarException):
            return False
        return True

    @staticmethod
    def _topics_of(sub: Any) -> list[str]:
        return sub.topics if isinstance(sub, PulsarSubscriber) else []

    @override
    async def publish(
        self,
        message: SendableMessage = None,
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
        """Send one message and wait until Pulsar has persisted it; returns its message id."""
        cmd = PulsarPublishCommand(
            message,
            topic=topic,
            key=key,
            ordering_key=ordering_key,
            event_time=event_time,
            deliver_after=deliver_after,
            headers=headers,
            correlation_id=correlation_id or self.config.id_generator(),
            reply_to=reply_to,
            _publish_type=PublishType.PUBLISH,
        )
        # FastStream's `_basic_publish`, written out (one coroutine less; tests/unit/bus pins its source):
        # each middleware's publish scope around the producer, the first middleware outermost.
        publish = self.config.producer.publish
        context = self.context
        middlewares = self.middlewares
        if len(middlewares) == 1:  # the default: the tracing middleware alone, and no partial to build
            return await middlewares[0](None, context=context).publish_scope(publish, cmd)
        for m in middlewares[::-1]:
            publish = partial(m(None, context=context).publish_scope, publish)
        return await publish(cmd)

    @override
    async def request(
        self,
        message: SendableMessage = None,
        topic: str = "",
        /,
        timeout: float = 30.0,
        *,
        key: str | None = None,
        headers: dict[str, str] | None = None,
        correlation_id: str | None = None,
    ) -> PulsarMessage:
        """Publish with `reply_to` set to the broker's reply topic and wait for the handler's answer."""
        cmd = PulsarPublishCommand(
            message,
            topic=topic,
            key=key,
            headers=headers,
            correlation_id=correlation_id or self.config.id_generator(),
            timeout=timeout,
            _publish_type=PublishType.REQUEST,
        )
        msg: PulsarMessage = await self._basic_request(cmd, producer=self.config.producer)
        return msg
