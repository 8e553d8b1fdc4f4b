"""A partition handed over between replicas (Failover): the broker may deliver what follows the old consumer's
read position before it rewinds to the messages the old consumer left unacked. Nothing may be lost and no
device's events may overtake each other (issue 14's scale-out e2e found both)."""

from __future__ import annotations

import dataclasses
import time

import pytest

from fleet_ingest.domain.model import TuyaDelivery
from fleet_ingest.ports import Received
from fleet_ingest.service_layer.handover import HandoverGuard
from tests.unit.ingest.fakes import HandoverPartition
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
    assert first.holds == 1
    assert guard.next_release() == 12.0
    assert guard.admit([at(7)], now=11.0).released == []
    assert ids(guard.release_due(12.0)) == ids([at(5), at(6), at(7)])
    # from then on, a continuous stream goes straight on: next entry, next batch index, a new ledger
    later = guard.admit([at(8), at(9, batch=0), at(9, batch=1), at(0, ledger=8)], now=12.5)
    assert len(later.released) == 4
    assert later.holds == 0


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
    assert jumped.holds == 1


def test_other_partitions_are_not_held_and_unknown_positions_pass() -> None:
    guard = HandoverGuard(hold_s=2.0)
    guard.admit([at(1, P1)], now=0.0)
    guard.release_due(2.0)
    mixed = guard.admit([at(9, P0), at(2, P1)], now=2.5)
    assert ids(mixed.released) == ids([at(2, P1)])
    plain = Received(dataclasses.replace(at(3).delivery, position=None), "x")
    assert guard.admit([plain], now=2.6).released == [plain]
    assert HandoverGuard(hold_s=0).admit([at(1)], now=0.0).released == [at(1)]


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
