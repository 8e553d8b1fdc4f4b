"""Fakes at the adapter seam: a Tuya topic that redelivers what was not acked, and a bus we can fail."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence

from fleet_ingest.domain.model import TuyaDelivery
from fleet_ingest.ports import Received
from fleet_shared.pulsar import Confirmations, Send


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
        out: list[Received] = []
        while self._open and self.pending and len(out) < limit:
            d = self.pending.popleft()
            self.delivered.append(d)
            out.append(Received(d, d.message_id))
        return out

    def acknowledge(self, received: Sequence[Received]) -> None:
        """Acks come in delivery order (messages without a position are never held back), each once."""
        for one in received:
            assert self.delivered[0].message_id == one.delivery.message_id, "ack out of delivery order"
            self.delivered.pop(0)
            self.acked.append(one.delivery.message_id)

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
        self.held: list[Send] = []
        self.fail_next = 0
        self._confirmations: Confirmations | None = None

    @property
    def confirmations(self) -> Confirmations:
        if self._confirmations is None:  # made inside the test's loop
            self._confirmations = Confirmations()
        return self._confirmations

    def _send(self) -> Send:
        send = Send()
        if self.fail_next:
            self.fail_next -= 1
            self.confirmations.complete(send, ConnectionError("bus unavailable"))
        elif self.hold:
            self.held.append(send)
        else:
            self.confirmations.complete(send)
        return send

    def release(self) -> None:
        held, self.held = self.held, []
        for send in held:
            self.confirmations.complete(send)

    def send_event(self, body: bytes, key: str | None, properties: dict[str, str]) -> Send:
        send = self._send()
        if send.error is None:
            self.events.append((body, key, properties))
        return send

    def send_dead_letter(self, body: bytes, key: str | None, properties: dict[str, str]) -> Send:
        send = self._send()
        if send.error is None:
            self.dead_letters.append((body, key, properties))
        return send

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ping(self) -> bool:
        return True


class HandoverPartition:
    """One partition of Tuya's topic as the broker serves it to a consumer taking it over from one that died
    holding `left_unacked` messages: first a read the old consumer's last dispatch triggered, delivering
    what follows the old read position (`race`, possibly empty), then, `rewind_after_s` later, the rewind to
    the first unacknowledged message and everything from there (Pulsar's Failover handover). Acks are
    individual; closing the consumer redelivers what is unacked, in order."""

    topic = "persistent://fake/out/event"
    subscription = "fake-sub"

    def __init__(self, messages: Sequence[TuyaDelivery], *, race: range, rewind_after_s: float) -> None:
        self.messages = list(messages)
        self.acked: list[int] = []
        self.subscriptions = 0
        self._race = race
        self._rewind_after_s = rewind_after_s
        self._queue: deque[int] = deque()
        self._index = {m.message_id: i for i, m in enumerate(self.messages)}
        self._wake = asyncio.Event()
        self._open = False
        self._rewind: asyncio.TimerHandle | None = None

    @property
    def unacked(self) -> list[int]:
        return [i for i in range(len(self.messages)) if i not in set(self.acked)]

    def _deliver_unacked(self) -> None:
        self._queue = deque(self.unacked)
        self._wake.set()

    async def subscribe(self) -> None:
        self.subscriptions += 1
        self._open = True
        if self.subscriptions == 1:
            self._queue = deque(self._race)
            self._rewind = asyncio.get_running_loop().call_later(self._rewind_after_s, self._deliver_unacked)
        else:
            self._deliver_unacked()

    async def receive(self) -> Received:
        while True:
            if not self._open:
                raise ConnectionError("consumer closed")
            if self._queue:
                d = self.messages[self._queue.popleft()]
                return Received(d, d.message_id)
            self._wake.clear()
            await self._wake.wait()

    def receive_ready(self, limit: int) -> list[Received]:
        out: list[Received] = []
        while self._open and self._queue and len(out) < limit:
            d = self.messages[self._queue.popleft()]
            out.append(Received(d, d.message_id))
        return out

    def acknowledge(self, received: Sequence[Received]) -> None:
        self.acked.extend(self._index[one.delivery.message_id] for one in received)

    async def close_consumer(self) -> None:
        self._open = False
        if self._rewind is not None:
            self._rewind.cancel()
        self._queue.clear()
        self._wake.set()

    async def close(self) -> None:
        await self.close_consumer()


class PartitionProbe:
    """The broker's answer for a `HandoverPartition`: is every message before `first` acked (what the
    subscription's mark-delete position shows)? `fail` makes it raise, as an unreachable admin API does."""

    def __init__(self, partition: HandoverPartition, *, fail: bool = False) -> None:
        self.partition = partition
        self.fail = fail
        self.asked = 0

    async def settled(self, partition: str, first: tuple[int, int, int]) -> bool:
        self.asked += 1
        if self.fail:
            raise ConnectionError("admin API unreachable")
        acked = set(self.partition.acked)
        index = next(i for i, m in enumerate(self.partition.messages) if m.position == first)
        return all(i in acked for i in range(index))
