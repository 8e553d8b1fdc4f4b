"""Writer readiness: a writer that has not completed a flush while work waits longer than
`FLEET_STATUS_WRITER_STALL_S` is not ready (so Kubernetes restarts it); an idle writer is ready however long
it idles. Time is a fake monotonic clock."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime

import pytest
from prometheus_client import CollectorRegistry
from pymongo.errors import AutoReconnect

from fleet_status.bootstrap import bootstrap
from fleet_status.domain.shadow import DeviceFacts, DpReading, StatusReport
from fleet_status.ports import ShadowWrite
from fleet_status.service_layer.writer import ShadowWriter
from fleet_status.settings import StatusSettings
from tests.unit.status.fakes import FakePublisher, FakeShadowStore, make

pytestmark = pytest.mark.unit

STALL_S = 30.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def report(device_id: str, t: int) -> DeviceFacts:
    return DeviceFacts(device_id, (StatusReport((DpReading("temp", 200 + t, t),)),), "p1")


def writer_with(clock: Clock) -> ShadowWriter:
    _broker, writer, _store, _publisher, _history = make()
    writer.stall_after_s = STALL_S
    writer.monotonic = clock
    return writer


async def test_an_idle_writer_stays_ready() -> None:
    clock = Clock()
    writer = writer_with(clock)
    clock.now += 10 * STALL_S
    assert writer.ready()


async def test_work_waiting_past_the_bound_without_a_flush_is_a_stall_until_a_flush_completes() -> None:
    clock = Clock()
    writer = writer_with(clock)
    await writer.submit(report("d1", 1), None, tenant="t", region="eu")
    clock.now += STALL_S
    assert writer.ready()  # at the bound: still within it
    await writer.submit(report("d2", 2), None, tenant="t", region="eu")
    clock.now += 0.5
    assert writer.stalled  # measured from the first waiting message, not the latest
    assert not writer.ready()

    await writer.flush_once()
    assert writer.pending_messages == 0
    assert writer.ready()
    clock.now += 10 * STALL_S
    assert writer.ready()  # nothing waits


async def test_work_arriving_after_a_flush_waits_from_its_own_arrival() -> None:
    clock = Clock()
    writer = writer_with(clock)
    await writer.submit(report("d1", 1), None, tenant="t", region="eu")
    clock.now += STALL_S - 1
    await writer.flush_once()
    clock.now += STALL_S - 1
    await writer.submit(report("d1", 2), None, tenant="t", region="eu")
    clock.now += STALL_S - 1
    assert writer.ready()
    clock.now += 2
    assert not writer.ready()


class HangingStore(FakeShadowStore):
    """A store whose write never returns (a database call stuck without a timeout)."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()

    async def write(self, writes: Sequence[ShadowWrite], now: datetime) -> set[str]:
        self.entered.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_a_flush_that_never_returns_is_a_stall_though_nothing_is_pending() -> None:
    clock = Clock()
    writer = writer_with(clock)
    store = HangingStore()
    writer.shadows = store
    await writer.submit(report("d1", 1), None, tenant="t", region="eu")
    flush = asyncio.create_task(writer.flush_once())
    await store.entered.wait()
    try:
        assert writer.pending_messages == 0  # the batch is in the hung flush
        assert writer.ready()
        clock.now += STALL_S + 1
        assert writer.healthy  # no flush failed...
        assert not writer.ready()  # ...but none completed either
    finally:
        flush.cancel()
        await asyncio.gather(flush, return_exceptions=True)


class OutageStore(FakeShadowStore):
    def __init__(self) -> None:
        super().__init__()
        self.down = True

    async def write(self, writes: Sequence[ShadowWrite], now: datetime) -> set[str]:
        if self.down:
            raise AutoReconnect("connection refused (injected)")
        return await super().write(writes, now)


async def test_a_retried_outage_does_not_reset_the_wait_and_the_first_good_flush_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def no_sleep(_: float) -> None:
        return None

    clock = Clock()
    writer = writer_with(clock)
    store = OutageStore()
    writer.shadows = store
    monkeypatch.setattr(asyncio, "sleep", no_sleep)  # the outage backoff
    await writer.submit(report("d1", 1), None, tenant="t", region="eu")
    for _ in range(4):
        clock.now += STALL_S / 4
        await writer.flush_once()  # fails, keeps the batch
    assert writer.pending_messages == 1
    clock.now += 1
    assert writer.stalled

    store.down = False
    await writer.flush_once()
    assert writer.ready()
    assert store.docs["d1"].shadow.version == 1


async def test_readyz_writer_check_uses_the_configured_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_STATUS_WRITER_STALL_S", "5")
    monkeypatch.delenv("FLEET_TUYA_ACCESS_SECRET", raising=False)  # no OpenAPI client to close
    service = bootstrap(StatusSettings(), registry=CollectorRegistry(), publisher=FakePublisher())
    try:
        assert service.writer.stall_after_s == 5
        clock = Clock()
        service.writer.monotonic = clock
        await service.writer.submit(report("d1", 1), None, tenant="t", region="eu")
        clock.now += 5
        assert await service.writer_ready()
        clock.now += 0.1
        assert not await service.writer_ready()
    finally:
        service.clients.mongo_client.close()
