"""The background loops that drive releases: started and stopped with the service.

- dispatch: per running region, commands as many devices as its dispatch rate allows since the last round
  (gaps drawn with the region's jitter; at most one round's backlog is kept, so a pause never turns into a
  burst), never more than `burst` per round.
- drive: starts scheduled regions whose start time has come, applies each running region's decision (halt,
  promote, complete) and adds late joiners to full stages once a minute.
- upkeep: our per-attempt timeouts, crash recovery of commanded attempts, verification of "done" devices.
- relay: publishes outboxes and applies their counter deltas (the adapter's round, handed in by bootstrap).

Each round of each loop is independent: a failing round (database or Tuya unreachable) is logged and the next
one tries again; every handler is idempotent, so a repeated round changes nothing twice.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from fleet_ota.domain.release import RegionRollout
from fleet_ota.service_layer import handlers as h
from fleet_ota.service_layer.handlers import Ports

log = logging.getLogger(__name__)


@dataclass
class DispatchPacer:
    """When each region may next command a device (monotonic seconds), from its rate and jitter."""

    tick_s: float
    burst: int
    rng: random.Random = field(default_factory=random.Random)
    next_at: dict[tuple[str, str], float] = field(default_factory=dict)

    def due(self, r: RegionRollout, now: float) -> list[float]:
        """The gaps of the commands due now (one per command)."""
        start = max(self.next_at.get((r.release_id, r.region), now), now - self.tick_s)
        gaps: list[float] = []
        at = start
        while at <= now and len(gaps) < self.burst:
            gap = r.plan.dispatch.gap(self.rng.random()).total_seconds()
            gaps.append(gap)
            at += gap
        self.next_at[(r.release_id, r.region)] = start
        return gaps

    def sent(self, r: RegionRollout, gaps: list[float], count: int) -> None:
        """Only commands actually sent use up their gap: an empty round does not bank credit."""
        key = (r.release_id, r.region)
        self.next_at[key] = self.next_at[key] + sum(gaps[:count])


class Loops:
    def __init__(
        self,
        ports: Ports,
        relay: Callable[[], Awaitable[int]],
        sweep: Callable[[], Awaitable[int]],
        *,
        tick_s: float,
        batch: int,
        burst: int,
        command_grace_s: float,
        poll_after_s: float,
        relay_idle_s: float,
    ) -> None:
        self.p = ports
        self.relay_round = relay
        self.sweep_round = sweep
        self.tick_s = tick_s
        self.batch = batch
        self.command_grace_s = command_grace_s
        self.poll_after_s = poll_after_s
        self.relay_idle_s = relay_idle_s
        self.pacer = DispatchPacer(tick_s, burst)
        self._late_joiners_at = 0.0
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(
                # a round per quarter tick keeps the pace smooth
                self._forever("dispatch", self.dispatch_round, self.tick_s / 4),
                name="ota-dispatch",
            ),
            asyncio.create_task(self._forever("drive", self.drive_round, self.tick_s), name="ota-drive"),
            asyncio.create_task(self._forever("upkeep", self.upkeep_round, self.tick_s), name="ota-upkeep"),
            asyncio.create_task(
                self._forever("relay", self.relay_round, self.relay_idle_s), name="ota-relay"
            ),
            # forgetting applied counter ids is housekeeping: its own loop, never in the relay's way
            asyncio.create_task(self._forever("sweep", self.sweep_round, self.tick_s * 5), name="ota-sweep"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    def running(self) -> bool:
        return bool(self._tasks) and not any(t.done() for t in self._tasks)

    async def _forever(self, name: str, round_: Callable[[], Awaitable[int]], idle_s: float) -> None:
        while True:
            try:
                busy = await round_()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the loop outlives a bad round (database, bus or Tuya unreachable)
                log.warning("ota %s round failed: %r", name, e)
                busy = 0
            if not busy:
                await asyncio.sleep(idle_s)
            else:
                await asyncio.sleep(0)

    async def dispatch_round(self) -> int:
        sent_total = 0
        for r in await self.p.rollouts.dispatching():
            gaps = self.pacer.due(r, time.monotonic())
            if gaps:
                sent = await h.dispatch(r.release_id, r.region, len(gaps), self.p)
                self.pacer.sent(r, gaps, sent)
                sent_total += sent
        return 0  # paced by the clock, not by how much was sent

    async def drive_round(self) -> int:
        now = self.p.clock()
        for r in await self.p.rollouts.scheduled():
            start_at = r.plan.schedule.start_at
            if start_at is None or start_at <= now:
                await h.start_rollout(r.release_id, r.region, "scheduler", self.p)
        late_joiners = time.monotonic() >= self._late_joiners_at
        for r in await self.p.rollouts.dispatching():
            await h.evaluate_rollout(r.release_id, r.region, self.p)
            if late_joiners:
                await h.plan_late_joiners(r.release_id, r.region, self.p)
        if late_joiners:
            self._late_joiners_at = time.monotonic() + 60
        return 0

    async def upkeep_round(self) -> int:
        done = await h.expire_deadlines(self.batch, self.p)
        done += await h.recover_commanded(self.command_grace_s, self.batch, self.p)
        done += await h.verify_done(self.batch, self.p)
        # polled ones that are still under way come back next round: they do not keep the loop busy
        await h.poll_upgrading(self.poll_after_s, self.batch, self.p)
        return 0 if done < self.batch else done  # a full batch: more may be waiting
