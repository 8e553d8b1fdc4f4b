"""Pulsar messages as FastStream sees them: the parsed message, the publish command, the handler response."""

from __future__ import annotations

import os
import random
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, Self

import orjson
from faststream.message import AckStatus, StreamMessage, decode_message
from faststream.response.publish_type import PublishType
from faststream.response.response import PublishCommand, Response
from typing_extensions import override

if TYPE_CHECKING:
    import pulsar
    from faststream._internal.basic_types import DecodedMessage, SendableMessage

    from .opentelemetry import MessagingSpans
    from .options import ProducerOptions

# FastStream metadata travels as ordinary string properties, next to the application's own.
CONTENT_TYPE = "content-type"
JSON = "application/json"
CORRELATION_ID = "correlation_id"
REPLY_TO = "reply_to"


# Correlation ids only need to be unique, not unpredictable: FastStream's `str(uuid4())` reads the OS
# random source on every publish (a fifth of the publish path's time). A private generator seeded from
# it, re-seeded in a forked child so siblings never share a sequence, gives ids of the same form.
_ids = random.Random()
os.register_at_fork(after_in_child=_ids.seed)
_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)


def new_correlation_id() -> str:
    """A random UUID (version 4) as text, like FastStream's default correlation ids."""
    h = f"{(_ids.getrandbits(128) & _UUID4_CLEAR) | _UUID4_SET:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class Settler(Protocol):
    """What a message calls to be acknowledged: its subscriber, which owns the consumer."""

    def ack_now(self, message: PulsarMessage) -> bool:
        """`settle_ack` done at once when it need not wait; False: nothing done, await `settle_ack`."""
        ...

    async def settle_ack(self, message: PulsarMessage) -> None: ...

    async def settle_nack(self, message: PulsarMessage) -> None: ...

    async def settle_reject(self, message: PulsarMessage) -> None: ...


class PulsarMessage(StreamMessage["pulsar.Message"]):
    """A received Pulsar message; ack, nack and reject go back through the subscriber that got it."""

    def __init__(self, *args: Any, settler: Settler | None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._settler = settler
        self.spans: MessagingSpans | None = None  # its spans, while spans are made (opentelemetry.py)

    @property
    def key(self) -> str:
        """The ordering key if set, else the partition key: what KeyShared routes by."""
        return str(self.raw_message.ordering_key() or self.raw_message.partition_key() or "")

    @property
    def topic(self) -> str:
        return str(self.raw_message.topic_name())

    @property
    def subscription(self) -> str | None:
        """The subscription it was received on (None: not received by a subscriber)."""
        name: str | None = getattr(self._settler, "subscription", None)
        return name

    @property
    def redelivery_count(self) -> int:
        return int(self.raw_message.redelivery_count())

    async def ack(self) -> None:
        if self.committed is None:
            settler = self._settler
            if settler is not None and not settler.ack_now(self):
                await settler.settle_ack(self)
            if self.committed is None:  # StreamMessage.ack, inline: a coroutine less per message
                self.committed = AckStatus.ACKED

    async def nack(self) -> None:
        if self.committed is None and self._settler is not None:
            await self._settler.settle_nack(self)
        await super().nack()

    async def reject(self) -> None:
        if self.committed is None and self._settler is not None:
            await self._settler.settle_reject(self)
        await super().reject()


class PulsarParser:
    """Turns a `pulsar.Message` into a `PulsarMessage` bound to the subscriber that will settle it."""

    __slots__ = ("_settler",)

    def __init__(self, settler: Settler | None) -> None:
        self._settler = settler

    async def parse_message(self, raw: pulsar.Message) -> PulsarMessage:
        headers: dict[str, str] = raw.properties()
        return PulsarMessage(
            raw_message=raw,
            body=raw.data(),
            headers=headers,
            reply_to=headers.get(REPLY_TO, ""),
            content_type=headers.get(CONTENT_TYPE),
            correlation_id=headers.get(CORRELATION_ID),
            message_id=str(raw.message_id()),
            settler=self._settler,
        )

    async def decode_message(self, msg: StreamMessage[Any]) -> DecodedMessage:
        if msg.content_type == JSON:
            # What FastStream's decode_message does for this content type (it decodes JSON with orjson
            # too), without its enum lookup and type checks per message.
            body: DecodedMessage = orjson.loads(msg.body)
            return body
        return decode_message(msg)


def to_millis(moment: datetime | int | None) -> int | None:
    """Pulsar wants epoch milliseconds; datetimes are accepted for convenience."""
    if moment is None or isinstance(moment, int):
        return moment
    return int(moment.timestamp() * 1000)


class PulsarPublishCommand(PublishCommand):
    """One message to send: body, destination topic and the Pulsar message metadata."""

    def __init__(
        self,
        message: SendableMessage,
        *,
        topic: str = "",
        key: str | None = None,
        ordering_key: str | None = None,
        event_time: datetime | int | None = None,
        deliver_after: timedelta | None = None,
        correlation_id: str | None = None,
        headers: dict[str, Any] | None = None,
        reply_to: str = "",
        timeout: float | None = 30.0,
        producer_options: ProducerOptions | None = None,
        _publish_type: PublishType,
    ) -> None:
        super().__init__(
            body=message,
            destination=topic,
            correlation_id=correlation_id,
            headers=headers,
            reply_to=reply_to,
            _publish_type=_publish_type,
        )
        self.key = key
        self.ordering_key = ordering_key
        self.event_time = to_millis(event_time)
        self.deliver_after = deliver_after
        self.timeout = timeout
        self.producer_options = producer_options

    @classmethod
    def from_cmd(cls, cmd: PublishCommand) -> Self:
        if isinstance(cmd, cls):
            return cmd
        return cls(
            cmd.body,
            topic=cmd.destination,
            correlation_id=cmd.correlation_id,
            headers=cmd.headers,
            reply_to=cmd.reply_to,
            timeout=getattr(cmd, "timeout", None),
            _publish_type=cmd.publish_type,
        )

    def properties(self, content_type: str | None) -> dict[str, str]:
        """Pulsar properties are str -> str: headers are stringified, FastStream metadata added."""
        props = {str(k): str(v) for k, v in self.headers.items()}
        if content_type:
            props[CONTENT_TYPE] = content_type
        if self.correlation_id:
            props[CORRELATION_ID] = self.correlation_id
        if self.reply_to:
            props[REPLY_TO] = self.reply_to
        return props

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(body={self.body!r}, topic={self.destination!r}, key={self.key!r}, "
            f"headers={self.headers}, correlation_id={self.correlation_id!r})"
        )


class PulsarResponse(Response):
    """A handler result that carries a partition key (or other Pulsar metadata) to its publishers."""

    def __init__(
        self,
        body: SendableMessage,
        *,
        key: str | None = None,
        ordering_key: str | None = None,
        event_time: datetime | int | None = None,
        headers: dict[str, Any] | None = None,
        correlation_id: str | None = None,
    ) -> None:
        super().__init__(body=body, headers=headers, correlation_id=correlation_id)
        self.key = key
        self.ordering_key = ordering_key
        self.event_time = event_time

    @override
    def as_publish_command(self) -> PulsarPublishCommand:
        return PulsarPublishCommand(
            self.body,
            key=self.key,
            ordering_key=self.ordering_key,
            event_time=self.event_time,
            headers=self.headers,
            correlation_id=self.correlation_id,
            _publish_type=PublishType.PUBLISH,
        )

    def get_publish_key(self) -> str | None:
        return self.key
