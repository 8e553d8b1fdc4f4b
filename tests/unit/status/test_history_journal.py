"""The history journal: a report's history is durable, and its message acked, with the one shadow write of its
device; the journal is bounded (rows, age, hours) and moves to the buckets first and is cleared by the next
shadow write, so a crash between the two loses nothing and adds nothing twice; a silent device's old journal
is moved by the writer on its own."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

import pytest

from fleet_status.adapters.tuya import SchemaCache
from fleet_status.domain.journal import HOUR_MS, Journal, JournalLimits
from fleet_status.domain.shadow import (
    AcceptedReading,
    DeviceFacts,
    DpReading,
    PresenceReport,
    StatusReport,
)
from fleet_status.ports import ShadowWrite
from fleet_status.service_layer.writer import ShadowWriter
from tests.unit.status.fakes import (
    FakeHistoryStore,
    FakeMessage,
    FakePublisher,
    FakeSchemaStore,
    FakeShadowStore,
    history_rows,
)

pytestmark = pytest.mark.unit

T0 = 1_800_000_000_000 - 1_800_000_000_000 % HOUR_MS  # device time: the start of an hour
NOW = datetime(2027, 1, 15, 8, 0, tzinfo=UTC)  # server time
NOW_MS = int(NOW.timestamp() * 1000)


def reading(t: int, value: int = 1) -> AcceptedReading:
    return AcceptedReading("temp", 2, value, value, t)


def report(device: str, t: int) -> DeviceFacts:
    return DeviceFacts(device, (StatusReport((DpReading("temp", t % 1000, t),)),), product_id="p1")


class Steps:
    """What reached the stores, in order: ("bucket", rows) and ("shadow", journal rows) per call."""

    def __init__(self) -> None:
        self.log: list[tuple[str, list[int]]] = []


class LoggedHistory(FakeHistoryStore):
    def __init__(self, steps: Steps) -> None:
        super().__init__()
        self.steps = steps

    async def add(
        self,
        readings: Mapping[str, Sequence[AcceptedReading]],
        presence: Mapping[str, Sequence[PresenceReport]],
        now: datetime,
    ) -> None:
        self.steps.log.append(("bucket", [r.device_time_ms - T0 for rs in readings.values() for r in rs]))
        await super().add(readings, presence, now)


class LoggedShadows(FakeShadowStore):
    """Logs each write's journal; `crash_next` makes the next write fail as a dying process would."""

    def __init__(self, steps: Steps) -> None:
        super().__init__()
        self.steps = steps
        self.crash_next = False
        self.longest_journal = 0

    async def write(self, writes: Sequence[ShadowWrite], now: datetime) -> set[str]:
        if self.crash_next:
            self.crash_next = False
            raise RuntimeError("the process died here (injected)")
        for w in writes:
            self.steps.log.append(("shadow", [r.device_time_ms - T0 for r in w.journal.readings]))
            self.longest_journal = max(self.longest_journal, len(w.journal))
        return await super().write(writes, now)


def writer_for(
    shadows: FakeShadowStore,
    history: FakeHistoryStore,
    *,
    max_rows: int = 3,
    max_age_s: float = 600.0,
    clock: list[datetime] | None = None,
    mono: list[float] | None = None,
) -> ShadowWriter:
    clock = clock or [NOW]
    mono = mono or [0.0]
    return ShadowWriter(
        shadows,
        history,
        SchemaCache(None, FakeSchemaStore()),
        FakePublisher(),
        tenant="t",
        region="eu",
        max_delay_s=0,
        journal_max_rows=max_rows,
        journal_max_age_s=max_age_s,
        clock=lambda: clock[0],
        monotonic=lambda: mono[0],
    )


# --- the journal's rules ------------------------------------------------------------------------------------


def test_a_journal_holds_each_report_once_and_dates_itself_by_its_oldest_row() -> None:
    journal = Journal().with_rows([reading(T0 + 1), reading(T0 + 1)], [PresenceReport(True, T0)], 100)
    assert (len(journal), journal.since_ms) == (2, 100)
    later = journal.with_rows([reading(T0 + 1), reading(T0 + 2)], [PresenceReport(True, T0)], 200)
    assert [r.device_time_ms - T0 for r in later.readings] == [1, 2]
    assert later.since_ms == 100  # the oldest row's
    assert later.with_rows([reading(T0 + 2)], [PresenceReport(True, T0)], 300) is later  # a replay: no change
    # the same time, the other state: another report
    assert len(later.with_rows([], [PresenceReport(False, T0)], 300)) == 4


def test_a_journal_is_due_when_full_old_or_spanning_two_hours() -> None:
    limits = JournalLimits(max_rows=3, max_age_ms=60_000)
    assert not Journal().due(10**15, limits)  # empty: never
    two = Journal().with_rows([reading(T0 + 1), reading(T0 + 2)], [], 1_000)
    assert not two.due(1_000 + 59_999, limits)
    assert two.due(1_000 + 60_000, limits)  # old
    assert two.with_rows([reading(T0 + 3)], [], 2_000).due(2_000, limits)  # full
    assert two.with_rows([reading(T0 + HOUR_MS)], [], 2_000).hours() == {T0, T0 + HOUR_MS}
    assert Journal().with_rows([reading(T0 - 1), reading(T0)], [], 1_000).due(1_000, limits)  # two hours
    with pytest.raises(ValueError, match="at least one row"):
        JournalLimits(max_rows=0)


# --- the writer ---------------------------------------------------------------------------------------------


async def test_a_report_is_acked_after_one_write_that_holds_the_shadow_and_its_history() -> None:
    shadows, history = FakeShadowStore(), FakeHistoryStore()
    writer = writer_for(shadows, history)
    message = FakeMessage()
    await writer.submit(report("d1", T0 + 5), message, tenant="t", region="eu")
    await writer.flush_once()
    assert message.acked
    assert (shadows.writes, history.appends) == (1, 0)
    assert [r.device_time_ms - T0 for r in shadows.docs["d1"].journal.readings] == [5]
    assert shadows.docs["d1"].journal.since_ms == NOW_MS

    again = FakeMessage()  # redelivered: nothing new, nothing written
    await writer.submit(report("d1", T0 + 5), again, tenant="t", region="eu")
    await writer.flush_once()
    assert again.acked
    assert shadows.writes == 1


async def test_a_full_journal_moves_to_the_buckets_before_the_shadow_write_that_clears_it() -> None:
    steps = Steps()
    shadows, history = LoggedShadows(steps), LoggedHistory(steps)
    writer = writer_for(shadows, history, max_rows=3)
    for t in range(1, 8):
        await writer.submit(report("d1", T0 + t), FakeMessage(), tenant="t", region="eu")
        await writer.flush_once()
    assert steps.log == [
        ("shadow", [1]),
        ("shadow", [1, 2]),
        ("bucket", [1, 2, 3]),
        ("shadow", []),
        ("shadow", [4]),
        ("shadow", [4, 5]),
        ("bucket", [4, 5, 6]),
        ("shadow", []),
        ("shadow", [7]),
    ]
    assert shadows.longest_journal < 3  # what is stored stays under the bound
    assert sorted(history_rows(shadows, history)) == [f"d1|temp|{T0 + t}" for t in range(1, 8)]


async def test_a_crash_between_the_move_and_the_clearing_write_loses_nothing_and_adds_nothing_twice() -> None:
    steps = Steps()
    shadows, history = LoggedShadows(steps), LoggedHistory(steps)
    first = writer_for(shadows, history, max_rows=3)
    for t in (1, 2):
        await first.submit(report("d1", T0 + t), FakeMessage(), tenant="t", region="eu")
        await first.flush_once()
    dying = FakeMessage()
    shadows.crash_next = True
    await first.submit(report("d1", T0 + 3), dying, tenant="t", region="eu")
    await first.flush_once()
    assert steps.log[-1] == ("bucket", [1, 2, 3])  # the move's first step landed, the clearing did not
    assert not dying.acked
    assert [r.device_time_ms - T0 for r in shadows.docs["d1"].journal.readings] == [1, 2]
    # a query meanwhile sees every row once (journal and bucket overlap)
    assert sorted(history_rows(shadows, history)) == [f"d1|temp|{T0 + t}" for t in (1, 2, 3)]

    # a new process gets the message again: the move is made again (the buckets skip what they hold)
    second = writer_for(shadows, history, max_rows=3)
    redelivered = FakeMessage()
    await second.submit(report("d1", T0 + 3), redelivered, tenant="t", region="eu")
    await second.flush_once()
    assert redelivered.acked
    assert steps.log[-2:] == [("bucket", [1, 2, 3]), ("shadow", [])]
    assert shadows.docs["d1"].journal == Journal()
    assert list(history.rows) == [f"d1|temp|{T0 + t}" for t in (1, 2, 3)]

    # a replay after the move: journaled again (one write), moved again later, still once in history
    late = FakeMessage()
    await second.submit(report("d1", T0 + 2), late, tenant="t", region="eu")
    await second.flush_once()
    assert late.acked
    assert sorted(history_rows(shadows, history)) == [f"d1|temp|{T0 + t}" for t in (1, 2, 3)]


async def test_an_old_journal_of_a_silent_device_is_moved_by_the_writer_on_its_own() -> None:
    clock, mono = [NOW], [0.0]
    shadows, history = FakeShadowStore(), FakeHistoryStore()
    writer = writer_for(shadows, history, max_rows=100, max_age_s=60.0, clock=clock, mono=mono)
    await writer.submit(report("d1", T0 + 1), FakeMessage(), tenant="t", region="eu")
    await writer.submit(report("d2", T0 + 2), FakeMessage(), tenant="t", region="eu")
    await writer.flush_once()
    clock[0] += timedelta(seconds=30)
    await writer.submit(report("d2", T0 + 3), FakeMessage(), tenant="t", region="eu")
    await writer.flush_once()
    writer.start()
    try:
        clock[0] += timedelta(seconds=31)  # d1's and d2's oldest rows are 61 s old
        mono[0] += 10.0  # past the writer's next look at its journals
        for _ in range(200):
            if not any(len(s.journal) for s in shadows.docs.values()):
                break
            await asyncio.sleep(0.01)
    finally:
        await writer.stop(5.0)
    assert [len(s.journal) for s in shadows.docs.values()] == [0, 0]
    assert sorted(history.rows) == [f"d1|temp|{T0 + 1}", f"d2|temp|{T0 + 2}", f"d2|temp|{T0 + 3}"]
    assert history.appends == 1  # both in one move
