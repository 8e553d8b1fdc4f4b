"""Request/reply: one private reply topic per broker; replies are matched to requests by correlation id."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import TYPE_CHECKING

import pulsar
from pulsar.asyncio import PulsarException

from .message import CORRELATION_ID

if TYPE_CHECKING:
    from pulsar import asyncio as pa

log = logging.getLogger(__name__)


REPLY_TOPIC_PREFIX = "non-persistent://public/default/faststream-reply-"


def default_reply_topic() -> str:
    # Non-persistent: a reply nobody waits for any more is worth nothing after a restart.
    return f"{REPLY_TOPIC_PREFIX}{uuid.uuid4().hex}"


class ReplyInbox:
    """An exclusive consumer on the reply topic and the requests waiting on it.

    A waiter registers before its request is published, so a fast reply cannot slip past it; replies
    nobody waits for (the request timed out) are acknowledged and dropped.
    """

    def __init__(self, client: pa.Client, topic: str) -> None:
        self.topic = topic
        self._client = client
        self._waiters: dict[str, asyncio.Future[pulsar.Message]] = {}
        self._consumer: pa.Consumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._consumer = await self._client.subscribe(
            self.topic,
            "faststream-reply",
            consumer_type=pulsar.ConsumerType.Exclusive,
        )
        self._task = asyncio.create_task(self._receive_loop(self._consumer))

    def expect(self, correlation_id: str) -> asyncio.Future[pulsar.Message]:
        future: asyncio.Future[pulsar.Message] = asyncio.get_running_loop().create_future()
        self._waiters[correlation_id] = future
        return future

    def forget(self, correlation_id: str) -> None:
        self._waiters.pop(correlation_id, None)

    async def close(self) -> None:
        if self._consumer is not None:
            # Closing fails the pending receive, which ends the loop without cancelling receive().
            with contextlib.suppress(PulsarException):
                await self._consumer.close()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        for future in self._waiters.values():
            future.cancel()
        self._waiters.clear()

    async def _receive_loop(self, consumer: pa.Consumer) -> None:
        while True:
            try:
                raw = await consumer.receive()
            except PulsarException as e:
                if e.error() == pulsar.Result.AlreadyClosed:
                    return
                log.warning("reply receive failed: %s", e)
                await asyncio.sleep(0.5)
                continue
            await consumer.acknowledge(raw)
            waiter = self._waiters.get(raw.properties().get(CORRELATION_ID, ""))
            if waiter is not None and not waiter.done():
                waiter.set_result(raw)
