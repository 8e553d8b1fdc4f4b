"""TestPulsarBroker: the broker in memory, with Pulsar's ack, nack and dead-letter semantics.

A nacked message is redelivered at once (the redelivery delay is not waited out) with its redelivery
count incremented; a `DeadLetter` subscriber dead-letters it after N redeliveries, with the error in the
properties, exactly as against a real Pulsar. A message published to a topic goes to one subscriber per
subscription name, as Shared, KeyShared and Failover subscriptions do.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections.abc import Generator, Iterable
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast, overload
from unittest.mock import MagicMock

import pulsar
from faststream._internal.testing.broker import TestBroker, change_producer
from faststream.exceptions import SubscriberNotFound
from pulsar.asyncio import PulsarException
from typing_extensions import override

from . import internals
from .broker import PulsarBroker
from .message import PulsarPublishCommand
from .options import normalize_topic
from .producer import PulsarProducer
from .subscriber import PulsarSubscriber

if TYPE_CHECKING:
    from faststream._internal.endpoint.subscriber import SubscriberUsecase
    from faststream.response import Response

    from .publisher import PulsarPublisher

__all__ = ("FakeMessage", "InMemoryConsumer", "TestPulsarBroker")

_ids = itertools.count()


class FakeMessageId:
    """Stands in for `pulsar.MessageId`: comparable, printable, serializable."""

    def __init__(self, entry: int) -> None:
        self.entry = entry

    def serialize(self) -> bytes:
        return str(self.entry).encode()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FakeMessageId) and other.entry == self.entry

    def __hash__(self) -> int:
        return hash(self.entry)

    def __str__(self) -> str:
        return f"(0,{self.entry},-1,-1)"

    __repr__ = __str__


class FakeMessage:
    """Stands in for `pulsar.Message`, with the accessors the broker and handlers use."""

    def __init__(
        self,
        body: bytes,
        *,
        topic: str,
        properties: dict[str, str],
        partition_key: str = "",
        ordering_key: str = "",
        event_timestamp: int = 0,
        redelivery_count: int = 0,
        message_id: FakeMessageId | None = None,
    ) -> None:
        self._body = body
        self._topic = topic
        self._properties = properties
        self._partition_key = partition_key
        self._ordering_key = ordering_key
        self._event_timestamp = event_timestamp
        self._publish_timestamp = int(time.time() * 1000)
        self._redelivery_count = redelivery_count
        self._message_id = message_id or FakeMessageId(next(_ids))

    def data(self) -> bytes:
        return self._body

    def value(self) -> bytes:
        return self._body

    def properties(self) -> dict[str, str]:
        return dict(self._properties)

    def partition_key(self) -> str:
        return self._partition_key

    def ordering_key(self) -> str:
        return self._ordering_key

    def event_timestamp(self) -> int:
        return self._event_timestamp

    def publish_timestamp(self) -> int:
        return self._publish_timestamp

    def topic_name(self) -> str:
        return self._topic

    def redelivery_count(self) -> int:
        return self._redelivery_count

    def message_id(self) -> FakeMessageId:
        return self._message_id

    def redelivered(self) -> FakeMessage:
        """The same message as Pulsar hands it out again after a nack."""
        return FakeMessage(
            self._body,
            topic=self._topic,
            properties=self._properties,
            partition_key=self._partition_key,
            ordering_key=self._ordering_key,
            event_timestamp=self._event_timestamp,
            redelivery_count=self._redelivery_count + 1,
            message_id=self._message_id,
        )


class InMemoryConsumer:
    """Records what each delivery ended as; its receive() waits until close, like an idle consumer."""

    def __init__(self) -> None:
        self.acked: list[Any] = []
        self.nacked: list[Any] = []
        self._closed: asyncio.Event | None = None

    async def acknowledge(self, message: Any) -> None:
        self.acked.append(message)

    async def negative_acknowledge(self, message: Any) -> None:
        self.nacked.append(message)

    def settled(self, message: Any) -> str | None:
        if any(m is message for m in self.acked):
            return "acked"
        if any(m is message for m in self.nacked):
            return "nacked"
        return None

    async def receive(self) -> Any:
        await self._closed_event().wait()
        raise PulsarException(pulsar.Result.AlreadyClosed)

    async def close(self) -> None:
        self._closed_event().set()

    def _closed_event(self) -> asyncio.Event:
        if self._closed is None:
            self._closed = asyncio.Event()
        return self._closed


class _FakeClient:
    async def subscribe(self, *args: Any, **kwargs: Any) -> InMemoryConsumer:
        return InMemoryConsumer()

    async def get_topic_partitions(self, topic: str) -> list[str]:
        return [topic]

    async def close(self) -> None:
        pass


def _matches(sub: PulsarSubscriber, topic: str) -> bool:
    if sub.pattern is not None:
        return re.fullmatch(sub.pattern, topic) is not None
    return any(normalize_topic(t) == topic for t in sub.topics)


class FakeProducer(PulsarProducer):
    """Routes each published message straight into the matching subscribers of the test brokers."""

    def __init__(self, broker: PulsarBroker, brokers: Iterable[PulsarBroker], redelivery_limit: int) -> None:
        real = broker.pulsar_producer
        super().__init__(reply_topic=real.reply_topic)
        self._parser = real._parser
        self._decoder = real._decoder
        self.codec = broker.config.broker_codec or real.codec
        self.serializer = internals.fast_depends_serializer(broker.config.fd_config)
        self._brokers = tuple(brokers)
        self._redelivery_limit = redelivery_limit

    @override
    async def publish(self, cmd: PulsarPublishCommand) -> Any:
        raw = await self._build(cmd)
        for sub in self._receivers(raw.topic_name()):
            await self._deliver(sub, raw)
        return raw.message_id()

    @override
    async def request(self, cmd: PulsarPublishCommand) -> Any:
        raw = await self._build(cmd)
        for sub in self._receivers(raw.topic_name()):
            result: Response = await asyncio.wait_for(
                sub.process_message(cast("pulsar.Message", raw)), cmd.timeout
            )
            reply = PulsarPublishCommand.from_cmd(result.as_publish_command())
            reply.destination = cmd.destination
            return await self._build(reply)
        raise SubscriberNotFound(f"no subscriber for {cmd.destination}")

    @override
    async def close(self) -> None:
        pass

    async def _build(self, cmd: PulsarPublishCommand) -> FakeMessage:
        body, content_type = await self.codec.encode(cmd.body, self.serializer)
        return FakeMessage(
            body,
            topic=normalize_topic(cmd.destination),
            properties=cmd.properties(content_type),
            partition_key=cmd.key or "",
            ordering_key=cmd.ordering_key or "",
            event_timestamp=cmd.event_time or 0,
        )

    def _receivers(self, topic: str) -> list[PulsarSubscriber]:
        """One subscriber per subscription name: the consumers of a subscription share its messages."""
        chosen: dict[str, PulsarSubscriber] = {}
        for broker in self._brokers:
            for sub in broker.subscribers:
                if isinstance(sub, PulsarSubscriber) and _matches(sub, topic):
                    chosen.setdefault(sub.subscription, sub)
        return list(chosen.values())

    async def _deliver(self, sub: PulsarSubscriber, raw: FakeMessage) -> None:
        consumer = _in_memory_consumer(sub)
        while True:
            error: Exception | None = None
            try:
                await sub.process_message(cast("pulsar.Message", raw))
            except Exception as e:
                error = e
            outcome = consumer.settled(raw)
            if outcome != "nacked":
                break
            if raw.redelivery_count() >= self._redelivery_limit:
                # Without a dead letter Pulsar would redeliver forever; a test should hear about it.
                raise error or RuntimeError(f"message nacked {self._redelivery_limit + 1} times")
            raw = raw.redelivered()
        if error is not None and outcome is None:
            # Neither acked nor nacked (AckPolicy.MANUAL, say): surface the handler's error.
            raise error


def _in_memory_consumer(sub: PulsarSubscriber) -> InMemoryConsumer:
    if not isinstance(sub._consumer, InMemoryConsumer):
        sub._consumer = InMemoryConsumer()
    return sub._consumer


class TestPulsarBroker(TestBroker[PulsarBroker, Any], broker=PulsarBroker):
    """`async with TestPulsarBroker(broker) as br:` runs `broker` in memory.

    `redelivery_limit` caps redeliveries of a nacked message on a subscriber without a DeadLetter
    (a real Pulsar would redeliver it forever); the handler's error is raised after that.
    """

    @overload
    def __init__(
        self,
        broker: PulsarBroker,
        /,
        *,
        with_real: bool = False,
        connect_only: bool | None = None,
        redelivery_limit: int = 10,
    ) -> None: ...

    @overload
    def __init__(
        self,
        *brokers: PulsarBroker,
        with_real: bool = False,
        connect_only: bool | None = None,
        redelivery_limit: int = 10,
    ) -> None: ...

    def __init__(
        self,
        *brokers: PulsarBroker,
        with_real: bool = False,
        connect_only: bool | None = None,
        redelivery_limit: int = 10,
    ) -> None:
        super().__init__(*brokers, with_real=with_real, connect_only=connect_only)
        self.redelivery_limit = redelivery_limit

    @override
    def create_publisher_fake_subscriber(
        self, broker: PulsarBroker, publisher: PulsarPublisher
    ) -> tuple[SubscriberUsecase[Any], bool]:
        topic = normalize_topic(publisher.topic)
        for b in self.brokers:
            for sub in b.subscribers:
                if isinstance(sub, PulsarSubscriber) and _matches(sub, topic):
                    return sub, True
        fake = broker.subscriber(publisher.topic, subscription="faststream-test-publisher", persistent=False)
        return fake, False

    @override
    def _fake_start(self, broker: PulsarBroker, *args: Any, **kwargs: Any) -> None:
        super()._fake_start(broker, *args, **kwargs)
        for sub in broker.subscribers:
            if isinstance(sub, PulsarSubscriber):
                _in_memory_consumer(sub)

    @override
    def _fake_close(self, broker: PulsarBroker, *args: Any, **kwargs: Any) -> None:
        super()._fake_close(broker, *args, **kwargs)
        for sub in broker.subscribers:
            # A later real start must subscribe for real.
            if isinstance(sub, PulsarSubscriber) and isinstance(sub._consumer, InMemoryConsumer):
                sub._consumer = None

    @contextmanager
    def _patch_producer(self, broker: PulsarBroker) -> Generator[None, None, None]:
        fake = FakeProducer(broker, self.brokers, self.redelivery_limit)
        with change_producer(broker.config.broker_config, fake):
            yield

    @override
    async def _fake_connect(self, broker: PulsarBroker, *args: Any, **kwargs: Any) -> MagicMock:  # type: ignore[override]
        client = _FakeClient()
        broker.config.broker_config.connect(cast("Any", client))
        return MagicMock(wraps=client)
