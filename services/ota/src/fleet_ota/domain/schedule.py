"""When a region may dispatch upgrades, and how fast.

Rules:
- Nothing is dispatched before the schedule's start time.
- A maintenance window (local start and end time of day, in the region's time zone, on chosen weekdays) limits
  dispatching to inside it; a window whose end is before its start runs over midnight (22:00-04:00) and
  belongs to the weekday it started on. No window: any time.
- The dispatch rate is devices per minute; each gap is the mean gap scaled by 1 +/- jitter, from a uniform
  draw the caller passes (so the average rate stays the configured one and time stays a parameter).
- The rate is the region's, whatever the number of replicas: they share one schedule (when the region's
  next command is due), and `due` says how many commands a round may send from it; at most a round's worth
  of unused time is kept, so a pause never turns into a burst.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
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


def due(
    next_at: float | None,
    now: float,
    rate: DispatchRate,
    draw: Callable[[], float],
    *,
    backlog_s: float,
    most: int,
) -> tuple[float, list[float]]:
    """The commands due at `now` (seconds) on the region's shared schedule: `(start, gaps)`, a gap each.

    `next_at` is when the region's next command is due (None: it never dispatched). The schedule then moves
    to `start + sum(gaps)`; a gap not used by a command is given back (an empty round banks nothing).
    """
    start = now if next_at is None else max(next_at, now - backlog_s)
    gaps: list[float] = []
    at = start
    while at <= now and len(gaps) < most:
        gap = rate.gap(draw()).total_seconds()
        gaps.append(gap)
        at += gap
    return start, gaps
