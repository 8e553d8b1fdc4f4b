"""The background loops that drive releases: started and stopped with the service.

- dispatch: per running region, commands as many devices as its dispatch rate allows over the next half
  tick (longer while preparing a round takes longer: `schedule.Lead`), never more than `burst` per round,
  each at its own slot of the project's schedule on Tuya's upgrade API, shared by every region, release and
  replica (`handlers.ProjectPace`, sent by the replica holding its lease; without it, of the region's
  schedule, gaps drawn with the region's jitter). Rounds are sent in the background: the next prepares
  while the last one's commands leave. A missed slot is lost rather than sent late in a burst; the pace
  slows a little while Tuya's rate limit keeps answering.
- drive: starts scheduled regions whose start time has come, applies each running region's decision (halt,
  promote, complete) and adds late joiners to full stages once a minute.
- upkeep: our per-attempt timeouts, crash recovery of commanded attempts, verification of "done" devices,
  and the versions of devices the device events marked, fetched into the directory.
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
from fleet_ota.domain.schedule import Lead, Throttle
from fleet_ota.service_layer import handlers as h
from fleet_ota.service_layer.handlers import Ports, ProjectPace
from fleet_shared.service.loops import cancel_all, while_busy

log = logging.getLogger(__name__)

DIRECTORY_REFRESH = 5  # devices whose versions are fetched a second


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
        project: ProjectPace | None = None,
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
        self.project = project
        # how far ahead a round may reserve: an intent must be sent within the command window (a quarter of
        # the grace period), so at most half of it, between 1 and 3 s (a paused region stops that much later)
        self.lead_most_s = min(max(command_grace_s / 8, 1.0), 3.0)
        self.round_s = max(tick_s / 4, 0.25)  # the slots a dispatch round adds, at least
        self.rng = random.Random()
        self._throttles: dict[tuple[str, str], Throttle] = {}
        self._leads: dict[tuple[str, str], Lead] = {}
        self._late_joiners_at = 0.0
        self._look_at = 0.0  # with the project paced: when the next dispatch round needs to look (epoch s)
        self._cut = 0  # rounds cut short seen so far (one more: look now, their slots are free again)
        self._turn = 0
        self._refresh_at = 0.0
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [
            # a round per quarter tick keeps the pace smooth (each sent in the background)
            while_busy("ota-dispatch", self.tick_s / 4, self.dispatch_round),
            while_busy("ota-drive", self.tick_s, self.drive_round),
            while_busy("ota-upkeep", self.tick_s, self.upkeep_round),
            while_busy("ota-relay", self.relay_idle_s, self.relay_round),
            # forgetting applied counter ids is housekeeping: its own loop, never in the relay's way
            while_busy("ota-sweep", self.tick_s * 5, self.sweep_round),
        ]

    async def stop(self) -> None:
        await cancel_all(self._tasks)
        self._tasks = []
        await h.in_flight()  # commands already fired get their answers recorded

    def running(self) -> bool:
        return bool(self._tasks) and not any(t.done() for t in self._tasks)

    async def dispatch_round(self) -> int:
        """Prepare a round per running region and send it in the background: the next round prepares while
        this one's commands leave (each round's window reaches past the loop's idle wait, so its slots
        follow the last round's without a gap). With the project paced under a lease, only its holder
        dispatches. Returns 0: the loop looks again after its idle wait (a quarter tick), whatever was sent.
        """
        if self.project and self.p.clock().timestamp() < self._look_at and self.project.cut == self._cut:
            return 0  # the rounds prepared last cover the project's slots until then: nothing to read yet
        if self.project:
            self._cut = self.project.cut
        if self.project and not await self.project.take_turn(self.p):
            return 0  # another replica sends the project's commands; this one stands by

        async def one(r: RegionRollout) -> float | None:
            throttle = self._throttles.setdefault((r.release_id, r.region), Throttle())
            # with the project paced, one lead for every region: the regions' rounds take turns at the
            # project's slots, and a round that got none learns nothing about preparing one
            key = ("", "") if self.project else (r.release_id, r.region)
            lead = self._leads.setdefault(key, Lead(most=self.lead_most_s))
            try:
                prepared = await h.prepare_round(
                    r,
                    self.p,
                    draw=self.rng.random,
                    most=self.burst,
                    ahead_s=self.tick_s / 4,
                    throttle=throttle,
                    lead=lead,
                    project=self.project,
                    # the loop's idle wait (a round preparing longer than the last, a lease renewal or a
                    # claim of new devices, still starts sending before the last one's slots end) and a
                    # round's worth of slots: at least a quarter second (a short tick made rounds of one
                    # command twenty times a second, each reading every schedule)
                    idle_s=self.tick_s / 4 + self.round_s,
                )
            except Exception as e:  # one region's failed round must not hold up the others
                log.warning("ota dispatch round of %s/%s failed: %r", r.release_id, r.region, e)
                return None
            if prepared is None:
                return None
            h.send_later(prepared, self.p)
            return prepared.slots[-1] if prepared.slots else None

        # regions at once: each is its own documents and schedule, and their round trips overlap
        running = await self.p.rollouts.dispatching()
        # the regions take turns at being first: with the project paced, the first round to ask is promised
        # the project's free slots (its schedule's window), and a fixed order would serve one region only
        self._turn += 1
        turn = self._turn % len(running) if running else 0
        ends = [e for e in await asyncio.gather(*(one(r) for r in running[turn:] + running[:turn])) if e]
        if self.project and ends:
            # the next round is read and prepared only once the project's reserved slots come within its
            # lead (and a quarter tick): polling the schedules every quarter tick meanwhile cost the
            # database reads for nothing (the relay fell behind on a loaded machine)
            lead = self._leads.get(("", ""))
            ahead = lead.ahead(self.tick_s / 4) if lead else self.tick_s / 4
            self._look_at = max(ends) - ahead - self.tick_s / 4
        return 0

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
        # a few devices' versions a second, whatever the tick: the OpenAPI's rate limit is shared with the
        # upgrade commands
        if time.monotonic() >= self._refresh_at:
            self._refresh_at = time.monotonic() + 1.0
            await self._part("directory refresh", h.refresh_directory(DIRECTORY_REFRESH, self.p))
        # each part on its own: one failing (a Tuya error on one device's fetch) must not hold up the others
        # (a round that failed at its first part never reached the timeouts and verifications after it)
        done = await self._part("timeouts", h.expire_deadlines(self.batch, self.p))
        done += await self._part("recovery", h.recover_commanded(self.command_grace_s, self.batch, self.p))
        done += await self._part("verification", h.verify_done(self.batch, self.p))
        # polled ones that are still under way come back next round: they do not keep the loop busy
        await self._part("polling", h.poll_upgrading(self.poll_after_s, self.batch, self.p))
        return 0 if done < self.batch else done  # a full batch: more may be waiting

    async def _part(self, what: str, work: Awaitable[int]) -> int:
        try:
            return await work
        except Exception as e:  # logged; the next round tries again (every handler is idempotent)
            log.warning("ota upkeep %s failed: %r", what, e)
            return 0
