"""Quota units handed out in blocks (the rules are in `domain.quota`): one process's allocator.

Reserving one unit per device and per counter costs two conditional writes on the two hottest documents
of the database for every device; at Tuya's removal rate that round trip, not Tuya, set the pace. Here a
counter is written once when a block is reserved and once when it is settled:

- Per counter, one current block at a time; every device of every batch in this process takes its unit
  from it (no write). A device holds the unit only once its own state write names the block; a device
  whose write lost its race gives the unit back to the block.
- A block closes when used up, when its hand-out window ends, when it sat idle, or when a batch run ends.
  Once every device it handed a unit to has written (or lost), it is settled with exactly the units taken
  (one conditional update: the rest are given back).
- When the counter is full but units handed out here may still come back (a device that lost its race, or
  whose second counter refused), the taker waits for them before refusing: a refusal means the quota is
  really used up, as with one reservation per device.
- A block whose outcome this process cannot know (the store did not answer a device's write, or the
  settlement itself failed), or whose process died, is settled by any worker once its `until` passed
  (hand-out window + call lease: no write that names it can still land) by counting the devices that
  name it (`handlers.settle_abandoned_blocks`).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from fleet_unbinding.domain.quota import BlockGrant, CounterKey, QuotaScope, Reservation
from fleet_unbinding.ports import Clock, QuotaCounters

log = logging.getLogger(__name__)


@dataclass
class _Block:
    key: CounterKey
    block_id: str
    n: int
    hand_out_until: datetime
    last_used: datetime
    free: int
    pending: int = 0  # units handed to devices whose state write has not answered yet
    consumed: int = 0  # units named by a device's durable state
    unknown: bool = False  # a write's outcome is unknown: only counting can settle this block
    closed: bool = False
    settling: bool = False  # its unused units are on their way back


def _new_block_id() -> str:
    # a field name in the counter document: no dots, no `$`, never all digits (an array index in a path)
    return "b" + secrets.token_hex(8)


class QuotaAllocator:
    def __init__(
        self,
        counters: QuotaCounters,
        clock: Clock,
        *,
        block_size: int = 32,
        hand_out: timedelta = timedelta(seconds=5),
        lease: timedelta = timedelta(seconds=30),
        idle: timedelta = timedelta(seconds=1),
        new_id: Callable[[], str] = _new_block_id,
    ) -> None:
        if block_size < 1:
            raise ValueError("block_size must be >= 1")
        self.counters = counters
        self.clock = clock
        self.block_size = block_size
        self.hand_out = hand_out
        self.lease = lease
        self.idle = idle
        self.new_id = new_id
        self._current: dict[str, _Block] = {}  # counter id -> the block units are taken from
        self._blocks: dict[str, _Block] = {}  # block id -> every block of this process not settled yet
        self._locks: dict[str, asyncio.Lock] = {}
        self._returned: dict[str, asyncio.Event] = {}  # set when a unit of that counter resolves

    def tracks(self, block_id: str) -> bool:
        """Whether this process settles the block itself."""
        return block_id in self._blocks

    async def take(self, keys: Sequence[tuple[CounterKey, int]]) -> BlockGrant | Reservation:
        """A unit in every counter (key, limit), in order, or the exhausted counter's refusal (the units
        taken before it go back)."""
        taken: list[_Block] = []
        try:
            for key, limit in keys:
                block = await self._take_one(key, limit)
                if block is None:
                    for b in taken:
                        await self._resolve(b, consumed=False)
                    return (
                        Reservation.ACCOUNT_EXHAUSTED
                        if key.scope is QuotaScope.ACCOUNT
                        else Reservation.PRODUCT_EXHAUSTED
                    )
                taken.append(block)
        except BaseException:  # cancelled (shutdown) or failed half-way: no device wrote these units
            for b in taken:
                await self._resolve(b, consumed=False)
            raise
        return BlockGrant(tuple(b.key for b in taken), tuple(b.block_id for b in taken))

    async def release(self, grant: BlockGrant, consumed: bool | None) -> None:
        """The device's state write answered: it names the grant's blocks (True), it lost its race (False),
        or nobody knows (None)."""
        for block_id in grant.blocks:
            block = self._blocks.get(block_id)
            if block is not None:
                await self._resolve(block, consumed=consumed)

    async def close_idle(self, *, everything: bool = False) -> None:
        """Close current blocks idle for `idle` (or all of them): their unused units go back."""
        now = self.clock()
        for block in list(self._current.values()):
            if everything or now - block.last_used >= self.idle or now >= block.hand_out_until:
                async with self._lock(block.key):
                    if self._current.get(block.key.id) is block:
                        await self._close(block)

    # --- internals ------------------------------------------------------------------------------------

    def _lock(self, key: CounterKey) -> asyncio.Lock:
        return self._locks.setdefault(key.id, asyncio.Lock())

    def _event(self, key: CounterKey) -> asyncio.Event:
        return self._returned.setdefault(key.id, asyncio.Event())

    def _in_flight(self, key: CounterKey) -> bool:
        """Units of this counter that may yet come back: handed out and unanswered, or being settled."""
        return any(b.pending > 0 or b.settling for b in self._blocks.values() if b.key == key)

    async def _take_one(self, key: CounterKey, limit: int) -> _Block | None:
        while True:
            returned = self._event(key)
            async with self._lock(key):
                returned.clear()  # before looking: a unit resolved from here on wakes the wait below
                now = self.clock()
                block = self._current.get(key.id)
                if block is not None and (block.free <= 0 or now >= block.hand_out_until):
                    await self._close(block)
                    block = None
                if block is None:
                    block = await self._reserve(key, limit, now)
                if block is not None:
                    block.free -= 1
                    block.pending += 1
                    block.last_used = now
                    return block
                if not self._in_flight(key):
                    return None
            # the counter is full, but units handed out here may come back: wait for one to resolve
            await returned.wait()

    async def _reserve(self, key: CounterKey, limit: int, now: datetime) -> _Block | None:
        block_id = self.new_id()
        until = now + self.hand_out + self.lease
        n = await self.counters.reserve_block(key, limit, self.block_size, block_id, until)
        if n <= 0:
            return None
        block = _Block(key, block_id, n, hand_out_until=now + self.hand_out, last_used=now, free=n)
        self._current[key.id] = block
        self._blocks[block_id] = block
        return block

    async def _resolve(self, block: _Block, *, consumed: bool | None) -> None:
        block.pending -= 1
        if consumed is True:
            block.consumed += 1
        elif consumed is None:
            block.unknown = True
        elif not block.closed:
            block.free += 1  # the unit goes back to the block
        if block.closed and block.pending == 0:
            await self._settle(block)
        self._event(block.key).set()  # after the settlement: a waiter then finds its units in the counter

    async def _close(self, block: _Block) -> None:
        block.closed = True
        if self._current.get(block.key.id) is block:
            del self._current[block.key.id]
        if block.pending == 0:
            await self._settle(block)
            self._event(block.key).set()

    async def _settle(self, block: _Block) -> None:
        if block.unknown:
            self._blocks.pop(block.block_id, None)
            log.warning("quota block %s of %s left for settlement by count", block.block_id, block.key.id)
            return
        block.settling = True
        try:
            await self.counters.settle(block.key, block.block_id, block.n, block.consumed)
        except Exception as e:  # the block stays listed: settled by count after its `until`
            log.warning("quota block %s of %s not settled: %r", block.block_id, block.key.id, e)
        finally:
            self._blocks.pop(block.block_id, None)
