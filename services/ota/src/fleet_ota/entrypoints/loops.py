"""The background loops that drive releases: started and stopped with the service.

- dispatch: per running region, commands as many devices as its dispatch rate allows since the last round,
  on the region's schedule shared by every replica (`handlers.paced_dispatch`: gaps drawn with the region's
  jitter; at most one tick's backlog is kept, so a pause never turns into a burst), never more than `burst`
  per round.
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

from fleet_ota.domain.release import RegionRollout
from fleet_ota.service_layer import handlers as h
from fleet_ota.service_layer.handlers import Ports

log = logging.getLogger(__name__)


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
        self.burst = burst
        self.rng = random.Random()
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
        async def one(r: RegionRollout) -> None:
            try:
                await h.paced_dispatch(
                    r, self.p, draw=self.rng.random, backlog_s=self.tick_s, most=self.burst
                )
            except Exception as e:  # one region's failed round must not hold up the others
                log.warning("ota dispatch round of %s/%s failed: %r", r.release_id, r.region, e)

        # regions at once: each is its own documents and schedule, and their round trips overlap
        await asyncio.gather(*(one(r) for r in await self.p.rollouts.dispatching()))
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
