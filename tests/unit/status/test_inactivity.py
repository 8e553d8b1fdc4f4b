"""Inactivity in presence: a device silent (by device time) past its timeout is offline with cause
`inactivity` until its next report; the outcome does not depend on delivery order; per-device timeouts
override the product's; the writer applies checks found by the deadline query and emits the events."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime

import orjson
import pytest

from fleet_status.domain.shadow import (
    DeviceFacts,
    DpReading,
    Fact,
    InactivityCheck,
    InactivityTimeoutSet,
    PresenceReport,
    Shadow,
    StatusReport,
    merge,
)
from fleet_status.service_layer.handlers import find_inactive, set_inactivity_timeout
from tests.unit.status.fakes import make

pytestmark = pytest.mark.unit

MINUTE = 60_000


def facts(*items: Fact) -> DeviceFacts:
    return DeviceFacts("d1", tuple(items), product_id="p1")


def report(t: int) -> StatusReport:
    return StatusReport((DpReading("temp", 200, t),))


def merged(*batches: DeviceFacts, timeout: int | None = MINUTE) -> Shadow:
    shadow = Shadow("d1")
    for batch in batches:
        shadow = merge(shadow, [batch], None, product_inactivity_ms=timeout).shadow
    return shadow


def test_silence_past_the_deadline_is_offline_by_inactivity_until_the_next_report() -> None:
    shadow = Shadow("d1")
    first = merge(
        shadow, [facts(PresenceReport(True, 1000), report(2000))], None, product_inactivity_ms=MINUTE
    )
    assert first.shadow.presence.deadline_ms == 2000 + MINUTE

    silent = merge(first.shadow, [facts(InactivityCheck(2000 + MINUTE))], None, product_inactivity_ms=MINUTE)
    p = silent.shadow.presence
    assert (p.effective_online, p.cause, p.inactive_at_ms, p.deadline_ms) == (
        False,
        "inactivity",
        62_000,
        None,
    )
    assert silent.changed
    assert silent.presence_change is not None
    assert (silent.presence_change.online, silent.presence_change.changed_at_ms) == (False, 62_000)
    assert silent.presence_change.cause == "inactivity"
    # checked again (a replay): nothing changes
    again = merge(silent.shadow, [facts(InactivityCheck(62_000))], None, product_inactivity_ms=MINUTE)
    assert not again.changed

    back = merge(silent.shadow, [facts(report(90_000))], None, product_inactivity_ms=MINUTE)
    p = back.shadow.presence
    assert (p.effective_online, p.cause, p.deadline_ms) == (True, "reported", 90_000 + MINUTE)
    assert back.presence_change is not None
    assert (back.presence_change.online, back.presence_change.cause) == (True, "report")
    # a check for a deadline that no longer stands changes nothing
    stale = merge(back.shadow, [facts(InactivityCheck(62_000))], None, product_inactivity_ms=MINUTE)
    assert not stale.changed


def causal(orders: Iterable[tuple[DeviceFacts, ...]]) -> Iterator[tuple[DeviceFacts, ...]]:
    """Orders in which each check comes after the report that set its deadline (a check is only ever made
    from a stored deadline); everything else in any order, with duplicates."""
    for order in orders:
        seen: set[int] = set()
        ok = True
        for item in order:
            for fact in item.facts:
                if isinstance(fact, InactivityCheck) and fact.deadline_ms - MINUTE not in seen:
                    ok = False
                if isinstance(fact, StatusReport | PresenceReport):
                    t = (
                        fact.readings[0].device_time_ms
                        if isinstance(fact, StatusReport)
                        else fact.device_time_ms
                    )
                    seen.add(t)
        if ok:
            yield order


def test_any_delivery_order_gives_the_same_presence() -> None:
    batches = [
        facts(PresenceReport(True, 1000)),
        facts(report(2000)),
        facts(InactivityCheck(2000 + MINUTE)),
        facts(report(1500)),  # late, older than the last seen: inactivity stands
        facts(InactivityCheck(1000 + MINUTE)),  # a check for an older deadline
        facts(InactivityCheck(2000 + MINUTE)),  # and a duplicate
    ]
    ends = {
        (s.presence.effective_online, s.presence.inactive_at_ms, s.presence.deadline_ms)
        for s in (merged(*order) for order in causal(itertools.permutations(batches)))
    }
    assert ends == {(False, 62_000, None)}

    with_newer_report = [*batches[:5], facts(report(70_000))]
    ends = {
        (s.presence.effective_online, s.presence.inactive_at_ms, s.presence.deadline_ms)
        for s in (merged(*order) for order in causal(itertools.permutations(with_newer_report)))
    }
    assert ends == {(True, None, 70_000 + MINUTE)}


def test_a_device_timeout_overrides_its_products_and_the_latest_command_wins() -> None:
    never = merged(facts(report(2000)), facts(InactivityTimeoutSet(0, at_ms=5)))
    assert never.presence.deadline_ms is None
    own = merged(facts(report(2000)), facts(InactivityTimeoutSet(5 * MINUTE, at_ms=5)))
    assert own.presence.deadline_ms == 2000 + 5 * MINUTE
    # the command with the later server time wins, whatever the order
    for order in itertools.permutations(
        [InactivityTimeoutSet(0, at_ms=5), InactivityTimeoutSet(None, at_ms=9)]
    ):
        shadow = merged(facts(report(2000)), *(facts(f) for f in order))
        assert shadow.presence.deadline_ms == 2000 + MINUTE  # cleared: the product's again
    assert merged(facts(report(2000)), timeout=None).presence.deadline_ms is None


async def test_the_writer_applies_due_checks_and_publishes_presence_with_its_cause() -> None:
    _, writer, store, publisher, _ = make()
    writer.inactivity_ms = lambda product_id: MINUTE if product_id == "p1" else None
    now = datetime.fromtimestamp(200, UTC)
    await writer.submit(facts(PresenceReport(True, 1000), report(2000)), None, tenant="t", region="eu")
    await writer.flush_once()

    class Due:
        async def due(self, now_ms: int, limit: int) -> list[tuple[str, int]]:
            deadlines = {d: s.shadow.presence.deadline_ms for d, s in store.docs.items()}
            return [(d, t) for d, t in deadlines.items() if t is not None and t <= now_ms][:limit]

    assert await find_inactive(Due(), writer, now=now, limit=10) == 1
    await writer.flush_once()
    assert store.docs["d1"].shadow.presence.effective_online is False
    assert await find_inactive(Due(), writer, now=now, limit=10) == 0  # no deadline while inactive
    presence = [orjson.loads(e.body)["data"] for e in publisher.published if "presence" in e.topic]
    assert [(p["online"], p.get("cause")) for p in presence] == [(True, "reported"), (False, "inactivity")]

    with pytest.raises(ValueError, match="inactivity timeout"):
        await set_inactivity_timeout(writer, "d1", -1, now=now)
    await set_inactivity_timeout(writer, "d1", 0, now=now)  # never: the reported presence stands again
    await writer.flush_once()
    assert store.docs["d1"].shadow.inactivity_timeout is not None
    p = store.docs["d1"].shadow.presence
    assert (p.effective_online, p.deadline_ms) == (True, None)
    await writer.submit(facts(report(300_000)), None, tenant="t", region="eu")
    await writer.flush_once()
    assert store.docs["d1"].shadow.presence.deadline_ms is None  # never due again
    presence = [orjson.loads(e.body)["data"] for e in publisher.published if "presence" in e.topic]
    assert [(p["online"], p.get("cause")) for p in presence][2:] == [(True, "reported")]
