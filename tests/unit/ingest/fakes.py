"""Fakes at the adapter seam: a Tuya topic that redelivers what was not acked, and a bus we can fail."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from fleet_ingest.adapters.tuya_consumer import Received
from fleet_ingest.domain.model import TuyaDelivery


class FakeTuyaSource:
    """Pulsar semantics that matter: in-order delivery; closing the consumer redelivers every unacked
    message, in order, before anything not yet delivered."""

    topic = "persistent://fake/out/event"
    subscription = "fake-sub"

    def __init__(self) -> None:
        self.pending: deque[TuyaDelivery] = deque()
        self.delivered: list[TuyaDelivery] = []  # delivered, not acked, in delivery order
        self.acked: list[str] = []
        self.subscriptions = 0
        self.closed = False
        self._wake = asyncio.Event()
        self._open = False

    def push(self, *deliveries: TuyaDelivery) -> None:
        self.pending.extend(deliveries)
        self._wake.set()

    async def subscribe(self) -> None:
        self.subscriptions += 1
        self._open = True

    async def receive(self) -> Received:
        while True:
            if not self._open:
                raise ConnectionError("consumer closed")
            if self.pending:
                d = self.pending.popleft()
                self.delivered.append(d)
                return Received(d, d.message_id)
            self._wake.clear()
            await self._wake.wait()

    def receive_ready(self, limit: int) -> list[Received]:
        out = []
        while self._open and self.pending and len(out) < limit:
            d = self.pending.popleft()
            self.delivered.append(d)
            out.append(Received(d, d.message_id))
        return out

    def acknowledge(self, received: Received) -> None:
        self.acked.append(received.delivery.message_id)
        if self.delivered and self.delivered[0].message_id == received.delivery.message_id:
            self.delivered.pop(0)  # the usual case: acks in delivery order
        else:
            self.delivered = [d for d in self.delivered if d.message_id != received.delivery.message_id]

    async def close_consumer(self) -> None:
        if self._open:
            self._open = False
            self.pending.extendleft(reversed(self.delivered))
            self.delivered = []
            self._wake.set()

    async def close(self) -> None:
        await self.close_consumer()
        self.closed = True


class FakeSink:
    """Records sends in order; `hold` keeps confirmations back; `fail_next` fails that many sends."""

    def __init__(self) -> None:
        self.events: list[tuple[bytes, str | None, dict[str, str]]] = []
        self.dead_letters: list[tuple[bytes, str | None, dict[str, str]]] = []
        self.hold = False
        self.held: list[asyncio.Future[Any]] = []
        self.fail_next = 0

    def _future(self) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.fail_next:
            self.fail_next -= 1
            future.set_exception(ConnectionError("bus unavailable"))
        elif self.hold:
            self.held.append(future)
        else:
            future.set_result("msg-id")
        return future

    def release(self) -> None:
        held, self.held = self.held, []
        for f in held:
            f.set_result("msg-id")

    def send_event(self, body: bytes, key: str | None, properties: dict[str, str]) -> asyncio.Future[Any]:
        future = self._future()
        if not future.done() or future.exception() is None:
            self.events.append((body, key, properties))
        return future

    def send_dead_letter(
        self, body: bytes, key: str | None, properties: dict[str, str]
    ) -> asyncio.Future[Any]:
        future = self._future()
        if not future.done() or future.exception() is None:
            self.dead_letters.append((body, key, properties))
        return future

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ping(self) -> bool:
        return True
