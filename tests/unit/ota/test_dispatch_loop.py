"""The service's dispatch loop in virtual time: rounds sent in the background while the next one prepares,
the project's pace held by one replica at a time (its lease), a takeover when the holder dies, and Tuya's
limit (no burst) met at >= 95% with nothing refused."""

from __future__ import annotations

import asyncio
import heapq
import inspect
import itertools
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest

from fleet_ota.domain.release import RegionPlan
from fleet_ota.domain.schedule import DispatchRate
from fleet_ota.entrypoints.loops import Loops
from fleet_ota.service_layer import handlers as h
from fleet_ota.service_layer.handlers import Ports
from tests.unit.ota.fakes import NOW, Clock, World
from tests.unit.ota.test_ota_handlers import POLICY, fleet, released

pytestmark = pytest.mark.unit


class VirtualClock(Clock):
    """Time moves only once every task waits: to the earliest wake-up (`drive`)."""

    def __init__(self) -> None:
        super().__init__()
        self._wakes: list[tuple[datetime, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._wakes, (self.now + timedelta(seconds=seconds), next(self._order), wake))
        await wake

    async def drive(self, while_: asyncio.Future[None] | asyncio.Task[None]) -> None:
        while not while_.done():
            for _ in range(30):  # everything ready runs (the fakes never really wait)
                await asyncio.sleep(0)
            if not self._wakes:
                continue
            at, _, wake = heapq.heappop(self._wakes)
            self.now = max(self.now, at)
            if not wake.done():
                wake.set_result(None)


class Slow:
    """A store on a loaded database: each call takes `delay_s` (virtual time) before it answers."""

    def __init__(self, inner: Any, clock: VirtualClock, delay_s: float) -> None:
        self._inner, self._clock, self._delay_s = inner, clock, delay_s

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not inspect.iscoroutinefunction(attr):
            return attr

        async def call(*args: Any, **kwargs: Any) -> Any:
            await self._clock.sleep(self._delay_s)
            return await attr(*args, **kwargs)

        return call


def slow(p: Ports, clock: VirtualClock, delay_s: float) -> Ports:
    """The same ports with every database call taking `delay_s`."""
    stores = ("rollouts", "upgrades", "plans", "progress", "devices", "locks", "pacing")
    return replace(p, **{name: Slow(getattr(p, name), clock, delay_s) for name in stores})


async def _nothing() -> int:
    return 0


def loops(p: Ports, lease_s: float) -> Loops:
    return Loops(
        p,
        _nothing,
        _nothing,
        tick_s=1.0,
        batch=200,
        burst=50,
        command_grace_s=120.0,
        poll_after_s=300.0,
        relay_idle_s=0.5,
        project=h.ProjectPace(10.0, lease_s=lease_s),
    )


async def dispatch_for(clock: VirtualClock, replica: Loops, until: datetime) -> None:
    """The dispatch loop as `while_busy` runs it: a round, then the idle wait (a quarter tick)."""
    while clock.now < until:
        await replica.dispatch_round()
        await clock.sleep(replica.tick_s / 4)


async def run(w: World, clock: VirtualClock, replicas: list[tuple[Loops, float]]) -> None:
    """Each replica dispatches for its seconds (then dies: it neither sends nor renews); the last commands
    fired are answered."""

    async def all_of() -> None:
        await asyncio.gather(*(dispatch_for(clock, r, NOW + timedelta(seconds=s)) for r, s in replicas))
        await h.in_flight()

    task = asyncio.ensure_future(all_of())
    await clock.drive(task)
    await task


async def world(regions: tuple[str, ...] = ("EU",)) -> tuple[World, VirtualClock, Ports]:
    w = World()
    clock = VirtualClock()
    w.clock = clock
    w.tuya.clock, w.tuya.limit_gap_s = clock, 0.1  # Tuya: 10 commands a second, no burst
    p = w.ports(POLICY)
    await fleet(w, dict.fromkeys(regions, 1000))
    await released(w, p, [RegionPlan(r, dispatch=DispatchRate(1200)) for r in regions])
    return w, clock, p


def at_least_95_percent_never_refused(w: World) -> int:
    """Tuya (10/s, no burst) accepted >= 95% of its limit from the first command to the last, refused
    nothing, and no device was commanded twice; returns how many it accepted."""
    accepted = len(w.tuya.sent_at)
    span = (w.tuya.sent_at[-1] - w.tuya.sent_at[0]).total_seconds()
    assert w.tuya.refused == 0
    assert (accepted - 1) / span >= 0.95 * 10
    assert min(spacing(w)) >= 0.1 - 1e-6
    assert len(set(w.tuya.commands)) == accepted
    return accepted


def spacing(w: World) -> list[float]:
    return [(b - a).total_seconds() for a, b in itertools.pairwise(w.tuya.sent_at)]


@pytest.mark.parametrize(("replicas", "lease_s"), [(1, 5.0), (2, 5.0), (2, 0.0)])
async def test_the_loop_keeps_tuyas_limit_busy_without_a_refusal(replicas: int, lease_s: float) -> None:
    """Two regions asking 20/s each against Tuya's 10/s: the loop's rounds follow each other without a gap
    (each sent in the background while the next prepares), so the project gets >= 95% of Tuya's limit over
    60 s, from the first command, with no refusal and no two commands closer than Tuya's gap."""
    w, clock, p = await world(("EU", "US"))
    await run(w, clock, [(loops(p, lease_s), 60.0) for _ in range(replicas)])
    accepted = at_least_95_percent_never_refused(w)
    assert sum(u.attempt for u in w.upgrades.docs.values()) == accepted


async def test_one_replica_holds_the_lease_and_another_takes_over_once_it_has_expired() -> None:
    """The holder dies at 20 s (no more rounds, no renewal): the other replica, standing by until then,
    sends from when the lease expired (at most its term later), after the holder's last slot."""
    w, clock, p = await world()
    first, second = loops(p, 5.0), loops(p, 5.0)
    await run(w, clock, [(first, 20.0), (second, 60.0)])
    assert first.project is not None
    assert second.project is not None
    before = [t for t in w.tuya.sent_at if t < NOW + timedelta(seconds=20)]
    after = [t for t in w.tuya.sent_at if t >= NOW + timedelta(seconds=20)]
    assert len(before) >= 0.95 * 10 * 20
    # the lease ran out 2.5-5 s after the holder's last renewal (half a term): the other sent from then on
    resumed = min(t for t in after if t > NOW + timedelta(seconds=21))
    assert resumed <= NOW + timedelta(seconds=25.5)
    assert len(after) >= 0.95 * 10 * (60 - (resumed - NOW).total_seconds())
    assert w.tuya.refused == 0
    assert min(spacing(w)) >= 0.1 - 1e-6
    assert len(set(w.tuya.commands)) == len(w.tuya.commands)


@pytest.mark.parametrize("replicas", [1, 2])
async def test_a_slow_database_costs_the_pace_nothing(replicas: int) -> None:
    """Every database call takes 30 ms (a round prepares for ~0.2 s: reads, claims, intents, reservations):
    the next round prepares while the last one's commands leave, so no slot passes unused between rounds
    (a round that waited for its last slot before the next prepared lost about a third of them)."""
    w, clock, p = await world()
    loaded = slow(p, clock, 0.03)
    await run(w, clock, [(loops(loaded, 5.0), 60.0) for _ in range(replicas)])
    at_least_95_percent_never_refused(w)
