"""A partition handed over between replicas (Failover): the broker may deliver what follows the old consumer's
read position before it rewinds to the messages the old consumer left unacked. Nothing may be lost and no
device's events may overtake each other (issue 14's scale-out e2e found both)."""

from __future__ import annotations

import dataclasses
import time

import pytest

from fleet_ingest.domain.model import TuyaDelivery
from fleet_ingest.ports import Received
from fleet_ingest.service_layer.handover import HandoverGuard, settled
from tests.unit.ingest.fakes import HandoverPartition, PartitionProbe
from tests.unit.ingest.test_ingest_pipeline import Harness, running, status, until

pytestmark = pytest.mark.unit

P0 = "persistent://t/out/event-partition-0"
P1 = "persistent://t/out/event-partition-1"


def at(entry: int, partition: str = P0, *, ledger: int = 7, batch: int = -1) -> Received:
    delivery = TuyaDelivery(
        payload=b"{}",
        properties={},
        message_id=f"{partition[-1]}:{ledger}:{entry}:{batch}",
        topic=partition,
        position=(ledger, entry, batch),
    )
    return Received(delivery, delivery.message_id)


def ids(received: list[Received]) -> list[str]:
    return [r.delivery.message_id for r in received]


# -- the guard alone -----------------------------------------------------------------------------------------


def test_a_partition_new_to_the_consumer_is_held_then_released_in_order() -> None:
    guard = HandoverGuard(hold_s=2.0)
    first = guard.admit([at(5), at(6)], now=10.0)
    assert first.released == []
    assert first.holds == [(P0, (7, 5, -1))]
    assert guard.next_release() == 12.0
    assert guard.admit([at(7)], now=11.0).released == []
    assert ids(guard.release_due(12.0)) == ids([at(5), at(6), at(7)])
    # from then on, a continuous stream goes straight on: next entry, next batch index, a new ledger
    later = guard.admit([at(8), at(9, batch=0), at(9, batch=1), at(0, ledger=8)], now=12.5)
    assert len(later.released) == 4
    assert later.holds == []


def test_a_rewind_during_the_hold_drops_what_it_redelivers_and_ends_the_hold() -> None:
    guard = HandoverGuard(hold_s=2.0)
    guard.admit([at(51), at(52), at(53)], now=0.0)  # the race: what followed the old consumer's position
    rewound = guard.admit([at(11), at(12)], now=1.0)  # the rewind to the first unacked message
    assert ids(rewound.dropped) == ids([at(51), at(52), at(53)])
    assert ids(rewound.released) == ids([at(11), at(12)])
    assert guard.next_release() is None
    assert len(guard.admit([at(13)], now=1.1).released) == 1


def test_a_rewind_keeps_what_it_does_not_redeliver() -> None:
    guard = HandoverGuard(hold_s=2.0)
    guard.admit([at(40), at(41), at(42)], now=0.0)
    rewound = guard.admit([at(41)], now=1.0)  # 40 was acked by the old consumer: not redelivered
    assert ids(rewound.released) == ids([at(40), at(41)])
    assert ids(rewound.dropped) == ids([at(41), at(42)])


def test_skipping_ahead_on_a_known_partition_holds_it_again() -> None:
    guard = HandoverGuard(hold_s=2.0)
    guard.admit([at(1)], now=0.0)
    guard.release_due(2.0)
    jumped = guard.admit([at(2), at(50)], now=3.0)  # someone else consumed 3..49 meanwhile
    assert ids(jumped.released) == ids([at(2)])
    assert jumped.holds == [(P0, (7, 50, -1))]


def test_other_partitions_are_not_held_and_unknown_positions_pass() -> None:
    guard = HandoverGuard(hold_s=2.0)
    guard.admit([at(1, P1)], now=0.0)
    guard.release_due(2.0)
    mixed = guard.admit([at(9, P0), at(2, P1)], now=2.5)
    assert ids(mixed.released) == ids([at(2, P1)])
    plain = Received(dataclasses.replace(at(3).delivery, position=None), "x")
    assert guard.admit([plain], now=2.6).released == [plain]
    assert HandoverGuard(hold_s=0).admit([at(1)], now=0.0).released == [at(1)]


def test_ending_a_hold_passes_on_what_it_held_and_the_stream_flows_on() -> None:
    guard = HandoverGuard(hold_s=2.0)
    guard.admit([at(5), at(6)], now=0.0)
    assert guard.held_from(P0) == (7, 5, -1)
    assert ids(guard.end_hold(P0)) == ids([at(5), at(6)])
    assert guard.held_from(P0) is None
    assert guard.next_release() is None
    assert ids(guard.admit([at(7)], now=0.1).released) == ids([at(7)])
    assert guard.end_hold(P0) == []


@pytest.mark.parametrize(
    ("first", "mark_delete", "ledgers", "expected"),
    [
        ((7, 5, -1), (7, 4), {7: 0}, True),  # right after the mark-delete position
        ((7, 5, -1), (7, 9), {7: 0}, True),  # already acked (by the old consumer): nothing before is open
        ((7, 5, -1), (7, 3), {7: 0}, False),  # 7:4 is unacked
        ((7, 5, 0), (7, 4), {7: 0}, True),  # the first message of a batch
        ((7, 5, 2), (7, 4), {7: 0}, False),  # batch indexes 0 and 1 of 7:5 may be unacked
        ((7, 5, 2), (7, 5), {7: 0}, True),
        ((9, 0, -1), (7, 99), {7: 100, 8: 0, 9: 0}, True),  # last entry of 7, 8 empty, first entry of 9
        ((9, 0, -1), (7, 98), {7: 100, 9: 0}, False),  # 7:99 is unacked
        ((9, 0, -1), (7, 99), {7: 100, 8: 3, 9: 0}, False),  # ledger 8's entries are unacked
        ((9, 0, -1), (6, 4), {9: 0}, True),  # ledger 6 was trimmed: consumed (or expired)
        ((9, 1, -1), (6, 4), {9: 0}, False),  # 9:0 is unacked
        ((9, 0, -1), (6, -1), {6: 0, 9: 0}, True),  # a new subscription's position before an empty ledger
    ],
)
def test_settled_reads_the_mark_delete_position(
    first: tuple[int, int, int], mark_delete: tuple[int, int], ledgers: dict[int, int], expected: bool
) -> None:
    assert settled(first, mark_delete, ledgers) is expected


# -- the pipeline across a handover --------------------------------------------------------------------------


def partition_stream(devices: int, per_device: int) -> list[TuyaDelivery]:
    """Status reports of `devices` devices interleaved on one partition, at positions 0, 1, 2, ..."""
    out = []
    for n in range(per_device):
        for d in range(devices):
            message = status(f"dev{d}", n)
            out.append(dataclasses.replace(message, topic=P0, position=(3, len(out), -1)))
    return out


def with_partition(h: Harness, partition: HandoverPartition) -> Harness:
    h.pipeline.source = partition
    return h


async def test_a_takeover_whose_broker_delivers_later_messages_first_loses_and_reorders_nothing() -> None:
    messages = partition_stream(devices=4, per_device=10)
    # The old consumer died holding 0..19 unacked; the broker first delivers 20..29, rewinds 0.2 s later.
    partition = HandoverPartition(messages, race=range(20, 30), rewind_after_s=0.2)
    h = with_partition(Harness(handover_hold_s=1.0), partition)
    async with running(h):
        await until(lambda: len(set(partition.acked)) == len(messages))
    assert h.published() == [(f"dev{d}", n) for n in range(10) for d in range(4)]  # each once, in order
    assert sorted(partition.acked) == list(range(len(messages)))
    assert h.metric("fleet_ingest_handover_holds_total") == 1
    assert h.metric("fleet_ingest_handover_dropped_total") == 10


async def test_a_takeover_without_early_delivery_is_held_once_then_flows() -> None:
    messages = partition_stream(devices=3, per_device=5)
    partition = HandoverPartition(messages, race=range(0), rewind_after_s=0.05)
    h = with_partition(Harness(handover_hold_s=0.5), partition)
    started = time.monotonic()
    async with running(h):
        await until(lambda: len(set(partition.acked)) == len(messages))
        held_for = time.monotonic() - started
    assert h.published() == [(f"dev{d}", n) for n in range(5) for d in range(3)]
    assert held_for >= 0.5
    assert h.metric("fleet_ingest_handover_dropped_total") == 0


def with_probe(h: Harness, probe: PartitionProbe) -> Harness:
    h.pipeline.probe = probe
    return h


async def test_a_start_with_nothing_left_unacked_is_not_held() -> None:
    messages = partition_stream(devices=3, per_device=5)
    # Nothing unacked before the first message delivered (a deploy, a restart after a graceful stop); the
    # broker's rewind redelivers what is unacked by then (the dedup window drops those copies).
    partition = HandoverPartition(messages, race=range(len(messages)), rewind_after_s=0.3)
    probe = PartitionProbe(partition)
    h = with_probe(with_partition(Harness(handover_hold_s=5.0), partition), probe)
    started = time.monotonic()
    async with running(h):
        await until(lambda: len(set(partition.acked)) == len(messages))
        flowed_after = time.monotonic() - started
    assert flowed_after < 2.0  # not the 5 s hold
    assert h.published() == [(f"dev{d}", n) for n in range(5) for d in range(3)]  # each once, in order
    assert h.metric("fleet_ingest_handover_holds_total") == 1
    assert h.metric("fleet_ingest_handover_holds_ended_total") == 1


@pytest.mark.parametrize("fail", [False, True])
async def test_a_takeover_from_a_consumer_that_left_messages_unacked_keeps_its_hold(fail: bool) -> None:
    messages = partition_stream(devices=4, per_device=10)
    partition = HandoverPartition(messages, race=range(20, 30), rewind_after_s=0.3)
    probe = PartitionProbe(partition, fail=fail)
    h = with_probe(
        with_partition(Harness(handover_hold_s=1.0, handover_probe_interval_s=0.05), partition), probe
    )
    async with running(h):
        await until(lambda: len(set(partition.acked)) == len(messages))
    assert h.published() == [(f"dev{d}", n) for n in range(10) for d in range(4)]  # each once, in order
    assert probe.asked >= 1
    assert h.metric("fleet_ingest_handover_holds_ended_total") == 0
    assert h.metric("fleet_ingest_handover_dropped_total") == 10
