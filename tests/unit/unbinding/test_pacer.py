"""The removal pacer (GCRA): the configured rate exactly, late wake-ups of a loaded loop cost no rate, at
most `burst + rate * T` calls start in any T seconds, and unbind and reset share one schedule."""

from __future__ import annotations

import pytest

from fleet_unbinding.adapters.tuya import Pacer

pytestmark = pytest.mark.unit


class SlowLoop:
    """A monotonic clock whose sleeps wake `late` seconds after they should (a busy event loop)."""

    def __init__(self, late: float = 0.0) -> None:
        self.now = 1000.0
        self.late = late
        self.starts: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds + self.late


async def run(pacer: Pacer, loop: SlowLoop, calls: int) -> list[float]:
    starts = []
    for _ in range(calls):
        await pacer.wait()
        starts.append(loop.now)
    return starts


def most_in_any(starts: list[float], window: float) -> int:
    best, first = 0, 0
    for last, t in enumerate(starts):
        while t - starts[first] >= window:
            first += 1
        best = max(best, last - first + 1)
    return best


@pytest.mark.parametrize("late", [0.0, 0.004, 0.009])
async def test_late_wake_ups_cost_no_rate_and_no_second_is_above_rate_plus_burst(late: float) -> None:
    loop = SlowLoop(late)
    pacer = Pacer(48.5, 1.5, clock=loop.clock, sleep=loop.sleep)
    starts = await run(pacer, loop, 500)
    sustained = (len(starts) - 1) / (starts[-1] - starts[0])
    assert sustained == pytest.approx(48.5, rel=0.01)  # a token bucket of burst 1 would lose `late`
    assert most_in_any(starts, 1.0) <= 50


async def test_an_idle_pacer_lets_a_burst_through_then_keeps_the_rate() -> None:
    loop = SlowLoop()
    pacer = Pacer(10, 2, clock=loop.clock, sleep=loop.sleep)
    starts = await run(pacer, loop, 3)
    assert starts[:2] == [1000.0, 1000.0]  # two at once
    assert starts[2] == pytest.approx(1000.1)
    loop.now += 60  # idle: no credit beyond the burst builds up
    starts = await run(pacer, loop, 3)
    assert starts[1] - starts[0] == 0
    assert starts[2] - starts[1] == pytest.approx(0.1)


def test_a_pacer_needs_a_positive_rate_and_a_burst_of_at_least_one() -> None:
    with pytest.raises(ValueError, match="rate must be"):
        Pacer(0)
    with pytest.raises(ValueError, match="rate must be"):
        Pacer(10, 0.5)
