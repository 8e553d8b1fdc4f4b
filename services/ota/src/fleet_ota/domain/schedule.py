"""When a region may dispatch upgrades, and how fast.

Rules:
- Nothing is dispatched before the schedule's start time.
- A maintenance window (local start and end time of day, in the region's time zone, on chosen weekdays) limits
  dispatching to inside it; a window whose end is before its start runs over midnight (22:00-04:00) and
  belongs to the weekday it started on. No window: any time.
- The dispatch rate is devices per minute; each gap is the mean gap scaled by 1 +/- jitter, from a uniform
  draw the caller passes (so the average rate stays the configured one and time stays a parameter).
- The rate is the region's, whatever the number of replicas: they share one schedule (when the region's
  next command is due), and `due` hands a round the slots (times) of its commands, up to a little ahead of
  now; each command is sent at its slot. A slot missed by more than one gap is lost, never sent late in a
  burst (Tuya's limit on the upgrade API may have no burst at all).
- Tuya's own limit answering (1199) slows the region's pace a little (`Throttle`); each accepted command
  brings it back towards the configured rate, so the pace settles just under whatever Tuya accepts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

ALL_DAYS = frozenset(range(7))  # Monday = 0


class ScheduleError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Window:
    start: time
    end: time
    weekdays: frozenset[int] = ALL_DAYS

    def __post_init__(self) -> None:
        if self.start == self.end:
            raise ScheduleError("a maintenance window needs different start and end times")
        if not self.weekdays or not self.weekdays <= ALL_DAYS:
            raise ScheduleError("weekdays are 0 (Monday) to 6 (Sunday), at least one")

    def contains(self, local: datetime) -> bool:
        t = local.time().replace(tzinfo=None)
        if self.start < self.end:
            return self.start <= t < self.end and local.weekday() in self.weekdays
        if t >= self.start:  # the evening part: the window opened today
            return local.weekday() in self.weekdays
        if t < self.end:  # the morning part: the window opened yesterday
            return (local.weekday() - 1) % 7 in self.weekdays
        return False


@dataclass(frozen=True, slots=True)
class Schedule:
    start_at: datetime | None = None
    window: Window | None = None
    time_zone: str = "UTC"

    def __post_init__(self) -> None:
        try:
            ZoneInfo(self.time_zone)
        except (KeyError, ValueError) as e:
            raise ScheduleError(f"unknown time zone {self.time_zone!r}") from e
        if self.start_at is not None and self.start_at.tzinfo is None:
            raise ScheduleError("the start time needs a time zone")

    def allows(self, now: datetime) -> bool:
        if self.start_at is not None and now < self.start_at:
            return False
        return self.window is None or self.window.contains(now.astimezone(ZoneInfo(self.time_zone)))


@dataclass(frozen=True, slots=True)
class DispatchRate:
    per_minute: float = 60.0
    jitter: float = 0.0  # 0..1

    def __post_init__(self) -> None:
        if not self.per_minute > 0:
            raise ScheduleError("the dispatch rate must be above 0 devices per minute")
        if not 0 <= self.jitter < 1:
            raise ScheduleError("jitter is a fraction from 0 to below 1")

    def gap(self, draw: float) -> timedelta:
        """Time until the next dispatch, `draw` uniform in [0, 1)."""
        mean = 60.0 / self.per_minute
        return timedelta(seconds=mean * (1 + self.jitter * (2 * draw - 1)))


@dataclass(slots=True)
class Throttle:
    """How much slower than its configured rate a region is paced, after Tuya's rate limit answered (1199):
    each refusal slows it by `step`, each accepted command recovers `recover` of that, never past the rate."""

    factor: float = 1.0
    step: float = 0.02
    recover: float = 0.0005  # about 40 accepted commands undo one refusal's slow-down
    # Tuya's limit is the project's, shared by every region (and release) at once: with four regions at 20/s
    # and Tuya at 10/s each region's share is an eighth of its rate, and a cap of 2 kept every region asking
    # four times what Tuya accepts (each refusal a wasted intent and its withdrawal: 600 in one e2e run)
    most: float = 16.0
    # a refusal after at least this many accepted commands since the last one slows nothing: an isolated
    # 1199 is a command that met jitter in transit (a few ms late, the next on time), not a pace above the
    # limit; slowing 2% for each held a project's pace near 87% of the limit on a quiet machine
    tolerated: int = 0
    _since: int = field(default=1 << 30, repr=False)  # accepted commands since the last refusal

    def refused(self) -> None:
        if self._since < self.tolerated or not self.tolerated:
            self.factor = min(self.factor * (1 + self.step), self.most)
        self._since = 0

    def accepted(self) -> None:
        self._since += 1
        self.factor = max(self.factor * (1 - self.recover), 1.0)


@dataclass(slots=True)
class Lead:
    """How far ahead a region's dispatch round reserves slots: at least the loop's quarter tick, and a few
    times what preparing a round (its database round trips before the first slot) took lately. A slot missed
    by more than a gap is lost, and nothing is sent while a round prepares, so with a fixed short window a
    loaded database held each round to about two commands: the region's pace fell to two per round trip
    instead of its rate."""

    prepare_s: float = 0.0
    times: float = 2.0
    # at most this far ahead: a round's intents are recorded before its slots and must be sent within the
    # command window (`handlers.Ports.command_window_s`), and a paused region stops only after its window
    most: float = 1.0

    def observed(self, seconds: float) -> None:
        # a moving average: one slow round (a pause of the process) does not stretch the window for long
        self.prepare_s = 0.5 * self.prepare_s + 0.5 * max(seconds, 0.0)

    def ahead(self, base_s: float) -> float:
        return min(max(base_s, self.times * self.prepare_s), max(base_s, self.most))


def due(
    next_at: float | None,
    now: float,
    rate: DispatchRate,
    draw: Callable[[], float],
    *,
    most: int,
    ahead_s: float = 0.0,
    slower: float = 1.0,
) -> tuple[float, list[float]]:
    """The slots of the commands due from `now` (seconds) to `now + ahead_s` on the region's shared schedule:
    `(start, gaps)`: the first command at `start`, each next one a gap later.

    `next_at` is when the region's next command is due (None: it never dispatched); a slot more than one mean
    gap in the past is lost. The schedule then moves to `start + sum(gaps)`. `slower` stretches every gap.
    """
    mean = 60.0 / rate.per_minute * slower
    start = now if next_at is None else max(next_at, now - mean)
    gaps: list[float] = []
    at = start
    while at <= now + ahead_s and len(gaps) < most:
        gap = rate.gap(draw()).total_seconds() * slower
        gaps.append(gap)
        at += gap
    return start, gaps
