"""What travels between the consume loop's stages: messages with their outcome and send, batches of them,
and the in-flight window that bounds how many are between receipt and ack."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from fleet_ingest.domain.model import DeadLetter, Publish
from fleet_ingest.ports import MessageTrace, Received
from fleet_shared.pulsar import Send


@dataclass(slots=True)
class Item:
    """One received message on its way: what to do with it, its trace, and its send once started."""

    received: Received
    outcome: Publish | DeadLetter
    trace: MessageTrace | None
    body: bytes = b""
    properties: dict[str, str] | None = None
    send: Send | None = None
    duplicate: bool = False


@dataclass(slots=True)
class Batch:
    """Messages received together; they travel through the stages as one queue entry."""

    items: list[Item]
    lookup: asyncio.Future[set[str]] | None = None
    received_at: float = 0.0
    sent_at: float = 0.0


class Slots:
    """The in-flight window: how many more messages may be taken before some are acked."""

    def __init__(self, size: int) -> None:
        self.free = size
        self._freed = asyncio.Event()

    def take(self, wanted: int) -> int:
        taken = min(wanted, self.free)
        self.free -= taken
        return taken

    async def wait(self) -> None:
        while self.free <= 0:
            self._freed.clear()
            await self._freed.wait()

    def release(self, count: int) -> None:
        self.free += count
        self._freed.set()


def confirmed_run(items: list[Item]) -> list[Item]:
    """The leading items that are settled: duplicates, and sends confirmed without error."""
    end = 0
    for item in items:
        send = item.send
        if not item.duplicate and (send is None or not send.done or send.error is not None):
            break
        end += 1
    return items[:end]


class SendFailed(Exception):
    """A send failed: the sequencer stops starting sends so none lands after the failed one."""
