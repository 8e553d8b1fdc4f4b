"""Where push messages go: Tuya's topic on a real Apache Pulsar (pulsar.asyncio, key-hash routing, batching),
or an in-memory list (unit tests, `serve` without a broker)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Protocol

import pulsar
from pulsar import asyncio as pulsar_asyncio

_log = logging.getLogger(__name__)


class PushSink(Protocol):
    async def start(self) -> None: ...

    async def send(self, key: str, payload: bytes, properties: dict[str, str]) -> str:
        """Publishes one message keyed by `key`; returns the broker's message id once confirmed."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class SentMessage:
    key: str
    payload: bytes
    properties: dict[str, str]


@dataclass
class MemorySink:
    """Keeps what was sent, in order: the fake at the adapter seam."""

    sent: list[SentMessage] = field(default_factory=list)

    async def start(self) -> None:
        return None

    async def send(self, key: str, payload: bytes, properties: dict[str, str]) -> str:
        self.sent.append(SentMessage(key, payload, dict(properties)))
        return f"memory:{len(self.sent) - 1}"

    async def close(self) -> None:
        return None


class PulsarSink:
    """One producer on Tuya's partitioned topic. The message key (device id) is the partition key, so one
    device's messages land on one partition in publication order; KeyBased batching keeps keys apart."""

    def __init__(
        self,
        service_url: str,
        topic: str,
        *,
        batching: bool = True,
        batching_max_delay_ms: int = 10,
        max_pending: int = 1000,
    ) -> None:
        self.service_url = service_url
        self.topic = topic
        self.batching = batching
        self.batching_max_delay_ms = batching_max_delay_ms
        self.max_pending = max_pending
        self._client: pulsar_asyncio.Client | None = None
        self._producer: pulsar_asyncio.Producer | None = None

    async def start(self) -> None:
        self._client = pulsar_asyncio.Client(
            self.service_url, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Warn)
        )
        self._producer = await self._client.create_producer(
            self.topic,
            batching_enabled=self.batching,
            batching_type=pulsar.BatchingType.KeyBased,
            batching_max_publish_delay_ms=self.batching_max_delay_ms,
            # The pipeline bounds in-flight sends below this, so the C++ queue never blocks the event loop.
            max_pending_messages=self.max_pending,
            max_pending_messages_across_partitions=self.max_pending * 11,
            block_if_queue_full=False,
        )
        _log.info("publishing Tuya push messages to %s", self.topic)

    async def send(self, key: str, payload: bytes, properties: dict[str, str]) -> str:
        if self._producer is None:
            raise RuntimeError("PulsarSink.start() first")
        message_id = await self._producer.send(payload, properties=properties, partition_key=key)
        return str(message_id)

    async def close(self) -> None:
        if self._producer is not None:
            try:
                await self._producer.flush()
            finally:
                await self._producer.close()
                self._producer = None
        if self._client is not None:
            await self._client.close()
            self._client = None
