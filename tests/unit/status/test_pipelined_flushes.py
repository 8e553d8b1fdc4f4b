"""Pipelined flushes: up to `flush_concurrency` batches are written at once, never two holding the same
device; facts arriving for a device whose batch is being written are merged into its next batch (one write
per device per flush), and each message is acknowledged only once the flush that carried it is durable."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from datetime import datetime

import pytest

from fleet_status.adapters.tuya import SchemaCache
from fleet_status.domain.shadow import DeviceFacts, DpReading, StatusReport
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


class WatchedStore(FakeShadowStore):
    """Records each write's devices and fails the test if a device is in two writes at once."""

    def __init__(self) -> None:
        super().__init__()
        self.writing: set[str] = set()
        self.batches: list[set[str]] = []
        self.concurrent = self.max_concurrent = 0

    async def write(self, writes: Sequence[ShadowWrite], now: datetime) -> set[str]:
        devices = {w.shadow.device_id for w in writes}
        assert not devices & self.writing, f"{devices & self.writing} in two flushes at once"
        self.writing |= devices
        self.batches.append(devices)
        self.concurrent += 1
        self.max_concurrent = max(self.max_concurrent, self.concurrent)
        try:
            await self.hold(len(self.batches) - 1)
            return await super().write(writes, now)
        finally:
            self.concurrent -= 1
            self.writing -= devices

    async def hold(self, index: int) -> None:
        await asyncio.sleep(0)


class GatedStore(WatchedStore):
    """Each write waits until the test opens its gate."""

    def __init__(self) -> None:
        super().__init__()
        self.gates: list[asyncio.Event] = []

    async def hold(self, index: int) -> None:
        self.gates.append(gate := asyncio.Event())
        await gate.wait()


class JitteryStore(WatchedStore):
    def __init__(self, rng: random.Random) -> None:
        super().__init__()
        self.rng = rng

    async def hold(self, index: int) -> None:
        await asyncio.sleep(self.rng.random() * 0.003)


def report(device: str, t: int) -> DeviceFacts:
    return DeviceFacts(device, (StatusReport((DpReading("temp", t, t),)),), product_id="p1")


def writer_for(store: FakeShadowStore, history: FakeHistoryStore, concurrency: int) -> ShadowWriter:
    return ShadowWriter(
        store,
        history,
        SchemaCache(None, FakeSchemaStore()),
        FakePublisher(),
        tenant="t",
        region="eu",
        max_delay_s=0,
        flush_concurrency=concurrency,
    )


async def until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(400):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


async def test_a_device_waits_for_its_batch_in_flight_and_its_new_reports_make_one_write() -> None:
    store = GatedStore()
    writer = writer_for(store, FakeHistoryStore(), concurrency=2)
    m = {k: FakeMessage() for k in range(1, 6)}
    writer.start()
    try:
        await writer.submit(report("d1", 1), m[1], tenant="t", region="eu")
        await writer.submit(report("d2", 2), m[2], tenant="t", region="eu")
        await until(lambda: len(store.gates) == 1, "the first flush")
        assert store.batches[0] == {"d1", "d2"}

        for k, (device, t) in enumerate([("d1", 3), ("d1", 4), ("d3", 5)], start=3):
            await writer.submit(report(device, t), m[k], tenant="t", region="eu")
        await until(lambda: len(store.gates) == 2, "the second flush")
        assert store.batches[1] == {"d3"}  # d1's batch is in flight: its new reports wait
        await asyncio.sleep(0.02)
        assert len(store.gates) == 2  # two flushes at most
        assert not any(msg.acked for msg in m.values())  # nothing durable yet

        store.gates[0].set()
        await until(lambda: m[1].acked and m[2].acked, "the first flush's acks")
        await until(lambda: len(store.gates) == 3, "d1's next flush")
        assert store.batches[2] == {"d1"}
        assert not (m[3].acked)
        assert not (m[4].acked)
        assert not (m[5].acked)

        store.gates[1].set()
        await until(lambda: m[5].acked, "the second flush's ack")
        assert not (m[3].acked)
        assert not (m[4].acked)
        store.gates[2].set()
        await until(lambda: m[3].acked and m[4].acked, "the third flush's acks")
    finally:
        for gate in store.gates:
            gate.set()
        await writer.stop(5.0)

    d1 = store.docs["d1"].shadow
    assert d1.version == 2  # reports 1, then 3 and 4 merged: two writes
    assert d1.dps["temp"].device_time_ms == 4
    assert store.writes == 4
    assert writer.metrics.conflicts._value.get() == 0


async def test_shuffled_duplicated_reports_through_concurrent_flushes_end_at_the_newest_per_device() -> None:
    rng = random.Random(5)
    store, history = JitteryStore(rng), FakeHistoryStore()
    writer = writer_for(store, history, concurrency=3)
    devices = [f"d{i}" for i in range(20)]
    reports = [(d, t) for d in devices for t in range(1, 41)]
    delivered = reports + rng.sample(reports, 200)  # duplicates
    rng.shuffle(delivered)
    messages = [FakeMessage() for _ in delivered]
    writer.start()
    try:
        for (device, t), message in zip(delivered, messages, strict=True):
            await writer.submit(report(device, t), message, tenant="t", region="eu")
            if rng.random() < 0.1:
                await asyncio.sleep(rng.random() * 0.002)
    finally:
        await writer.stop(10.0)

    assert all(m.acked for m in messages)
    assert not any(m.nacked for m in messages)
    for device in devices:
        shadow = store.docs[device].shadow
        assert shadow.dps["temp"].device_time_ms == 40
    assert len(history_rows(store, history)) == len(reports)  # every report's history once
    assert history.rows  # journals of 40 reports moved to the buckets on the way
    assert store.max_concurrent > 1  # flushes did overlap
    assert store.max_concurrent <= 3
    # coalesced: fewer writes than reports (a late report's history costs a journal write unless shared)
    assert store.writes < 0.8 * len(reports)
    assert writer.metrics.conflicts._value.get() == 0


async def test_stopping_drains_what_is_pending_behind_a_flush_in_flight() -> None:
    store = GatedStore()
    writer = writer_for(store, FakeHistoryStore(), concurrency=2)
    first, second = FakeMessage(), FakeMessage()
    writer.start()
    await writer.submit(report("d1", 1), first, tenant="t", region="eu")
    await until(lambda: len(store.gates) == 1, "the first flush")
    await writer.submit(report("d1", 2), second, tenant="t", region="eu")
    stopping = asyncio.create_task(writer.stop(5.0))
    await asyncio.sleep(0.02)
    assert len(store.gates) == 1  # d1's next batch waits for the one in flight
    store.gates[0].set()
    await until(lambda: len(store.gates) == 2, "d1's last flush")
    store.gates[1].set()
    await stopping
    assert first.acked
    assert second.acked
    assert store.docs["d1"].shadow.dps["temp"].device_time_ms == 2


async def test_back_pressure_counts_the_messages_being_written_until_they_are_acked() -> None:
    """The bound is on messages held unacknowledged (pending or in a flush), as the broker counts them: a
    consumer over its unacked limit gets nothing more until acks bring it far below."""
    store = GatedStore()
    writer = ShadowWriter(
        store,
        FakeHistoryStore(),
        SchemaCache(None, FakeSchemaStore()),
        FakePublisher(),
        tenant="t",
        region="eu",
        max_delay_s=0,
        max_pending=3,
        flush_concurrency=1,
    )
    m = [FakeMessage() for _ in range(4)]
    writer.start()
    try:
        await writer.submit(report("d1", 1), m[0], tenant="t", region="eu")
        await writer.submit(report("d2", 2), m[1], tenant="t", region="eu")
        await until(lambda: len(store.gates) == 1, "the first flush")
        assert writer.pending_messages == 0
        await writer.submit(report("d3", 3), m[2], tenant="t", region="eu")
        assert writer.held_messages == 3
        fourth = asyncio.create_task(writer.submit(report("d4", 4), m[3], tenant="t", region="eu"))
        await asyncio.sleep(0.02)
        assert not fourth.done()  # two in the flush and one pending: held at the bound

        store.gates[0].set()
        await until(lambda: m[0].acked and m[1].acked, "the first flush's acks")
        await asyncio.wait_for(fourth, 1.0)  # the acks made room

        def open_gates() -> bool:
            for gate in store.gates:
                gate.set()
            return all(x.acked for x in m)

        await until(open_gates, "every ack")
        assert writer.held_messages == 0
    finally:
        for gate in store.gates:
            gate.set()
        await writer.stop(5.0)
