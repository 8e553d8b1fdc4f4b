"""The broker's one producer object: a cached Pulsar producer per topic, bounded and confirmed sends."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from faststream._internal.endpoint.utils import ParserComposition
from faststream._internal.producer import ProducerProto
from faststream.exceptions import FeatureNotSupportedException, IncorrectState
from pulsar.asyncio import PulsarException
from typing_extensions import override

from .codec import OrjsonCodec
from .message import PulsarParser, PulsarPublishCommand
from .options import ProducerOptions
from .rpc import ReplyInbox

if TYPE_CHECKING:
    import pulsar
    from fast_depends.library.serializer import SerializerProto
    from faststream._internal.parser import CodecProto
    from faststream._internal.types import CustomCallable
    from pulsar import asyncio as pa

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _TopicProducer:
    producer: pa.Producer
    # Bounds sends in flight to what the client queue holds, so none fails with ProducerQueueIsFull.
    in_flight: asyncio.Semaphore


class PulsarProducer(ProducerProto[PulsarPublishCommand]):
    """Publishes commands; each send is awaited until the broker has persisted the message."""

    def __init__(
        self,
        *,
        parser: CustomCallable | None = None,
        decoder: CustomCallable | None = None,
        default_options: ProducerOptions | None = None,
        reply_topic: str,
    ) -> None:
        default = PulsarParser(settler=None)
        self._parser = ParserComposition(parser, default.parse_message)
        self._decoder = ParserComposition(decoder, default.decode_message)
        self.codec: CodecProto = OrjsonCodec()
        self.serializer: SerializerProto | None = None
        self.default_options = default_options or ProducerOptions()
        self.reply_topic = reply_topic
        self._client: pa.Client | None = None
        self._topics: dict[str, _TopicProducer] = {}
        self._creating = asyncio.Lock()
        self._inbox: ReplyInbox | None = None

    def connect(
        self, client: pa.Client, serializer: SerializerProto | None, codec: CodecProto | None
    ) -> None:
        self._client = client
        self.serializer = serializer
        self.codec = codec or OrjsonCodec()

    @property
    def client(self) -> pa.Client:
        if self._client is None:
            raise IncorrectState("PulsarBroker is not connected: call `await broker.connect()` first")
        return self._client

    def is_connected(self) -> bool | None:
        """Whether the cached producers are connected; None when there are none to ask."""
        if not self._topics:
            return None
        return all(t.producer.is_connected() for t in self._topics.values())

    @override
    async def publish(self, cmd: PulsarPublishCommand) -> pulsar.MessageId:
        body, content_type = await self.codec.encode(cmd.body, self.serializer)
        target = await self._producer_for(cmd.destination, cmd.producer_options)
        async with target.in_flight:
            return await target.producer.send(
                body,
                properties=cmd.properties(content_type),
                partition_key=cmd.key,
                ordering_key=cmd.ordering_key,
                event_timestamp=cmd.event_time,
                deliver_after=cmd.deliver_after,
            )

    @override
    async def request(self, cmd: PulsarPublishCommand) -> pulsar.Message:
        inbox = await self._reply_inbox()
        cmd.reply_to = inbox.topic
        correlation_id = cmd.correlation_id or ""
        if not correlation_id:
            raise ValueError("a request needs a correlation id")
        waiter = inbox.expect(correlation_id)
        try:
            await self.publish(cmd)
            async with asyncio.timeout(cmd.timeout or 30.0):
                return await waiter
        finally:
            inbox.forget(correlation_id)

    @override
    async def publish_batch(self, cmd: PulsarPublishCommand) -> None:
        # Pulsar batches on the producer side already (see ProducerOptions); an explicit batch adds nothing.
        raise FeatureNotSupportedException("Pulsar batches sends itself: publish messages one by one")

    async def close(self) -> None:
        """Flush and close every producer and the reply inbox; errors are logged so all get closed."""
        topics, self._topics = self._topics, {}
        for name, target in topics.items():
            with contextlib.suppress(PulsarException):
                await target.producer.flush()
            try:
                await target.producer.close()
            except PulsarException as e:
                log.warning("closing the producer of %s failed: %s", name, e)
        if self._inbox is not None:
            inbox, self._inbox = self._inbox, None
            await inbox.close()
        self._client = None

    async def _producer_for(self, topic: str, options: ProducerOptions | None) -> _TopicProducer:
        if (target := self._topics.get(topic)) is not None:
            return target
        async with self._creating:
            if (target := self._topics.get(topic)) is None:
                chosen = options or self.default_options
                producer = await self.client.create_producer(topic, **chosen.as_kwargs())
                target = self._topics[topic] = _TopicProducer(
                    producer, asyncio.Semaphore(chosen.max_pending_messages)
                )
            return target

    async def _reply_inbox(self) -> ReplyInbox:
        async with self._creating:
            if self._inbox is None:
                inbox = ReplyInbox(self.client, self.reply_topic)
                await inbox.start()
                self._inbox = inbox
            return self._inbox
