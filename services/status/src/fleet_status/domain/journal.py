"""The history journal: the DP readings and presence reports a shadow holds until they move to DP history.

A report is durable with one write: its history rows go into the journal of the device's shadow document, in
the same conditional single-document write as the shadow (the message is acknowledged once it lands). Now and
then the journal moves to the hourly history buckets: one bucket append per hour it spans, then the shadow's
next write leaves the moved rows out. A move is due when the journal holds `max_rows` rows, when its oldest
row was journaled `max_age_ms` ago (server time: device clocks are not trusted), or when it spans two hours
of device time (the earlier hour's bucket is complete).

Crash safety: the bucket append comes first and skips the rows its bucket already holds (keyed by DP code
and device time, presence by device time and state, as here), and the journal is cleared only by a shadow
write conditional on the version the move started from. A crash between the two leaves the rows in the
journal; the next move appends them again, which adds nothing. Readers read the journal before the buckets
and count a row found in both once, so a move in between hides nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from fleet_status.domain.shadow import AcceptedReading, PresenceReport

HOUR_MS = 3_600_000


def hour_of(device_time_ms: int) -> int:
    return device_time_ms - device_time_ms % HOUR_MS


def reading_key(reading: AcceptedReading) -> tuple[str, int]:
    """A DP report's identity in history: the same code at the same device time is the same report."""
    return (reading.code, reading.device_time_ms)


def presence_key(report: PresenceReport) -> tuple[int, bool]:
    return (report.device_time_ms, report.online)


@dataclass(frozen=True, slots=True)
class JournalLimits:
    max_rows: int = 32
    max_age_ms: int = 600_000

    def __post_init__(self) -> None:
        if self.max_rows < 1 or self.max_age_ms < 0:
            raise ValueError("a journal holds at least one row and a non-negative age")


@dataclass(frozen=True, slots=True)
class Journal:
    """History rows not yet in their buckets, in the order they were journaled (each report once)."""

    readings: tuple[AcceptedReading, ...] = ()
    presence: tuple[PresenceReport, ...] = ()
    since_ms: int | None = None  # server time the oldest row was journaled (None: empty)

    def __len__(self) -> int:
        return len(self.readings) + len(self.presence)

    def with_rows(
        self, readings: Iterable[AcceptedReading], presence: Iterable[PresenceReport], now_ms: int
    ) -> Journal:
        """This journal and the rows it does not hold yet (a replayed report adds nothing); itself if none."""
        seen_r = {reading_key(r) for r in self.readings}
        new_r: list[AcceptedReading] = []
        for r in readings:
            if reading_key(r) not in seen_r:
                seen_r.add(reading_key(r))
                new_r.append(r)
        seen_p = {presence_key(p) for p in self.presence}
        new_p: list[PresenceReport] = []
        for p in presence:
            if presence_key(p) not in seen_p:
                seen_p.add(presence_key(p))
                new_p.append(p)
        if not new_r and not new_p:
            return self
        return Journal(
            (*self.readings, *new_r),
            (*self.presence, *new_p),
            now_ms if self.since_ms is None else self.since_ms,
        )

    def hours(self) -> set[int]:
        return {hour_of(r.device_time_ms) for r in self.readings} | {
            hour_of(p.device_time_ms) for p in self.presence
        }

    def due(self, now_ms: int, limits: JournalLimits) -> bool:
        """Whether the journal moves to its buckets now (full, old, or spanning two hours)."""
        if not len(self):
            return False
        if len(self) >= limits.max_rows:
            return True
        if self.since_ms is not None and now_ms - self.since_ms >= limits.max_age_ms:
            return True
        return len(self.hours()) > 1
