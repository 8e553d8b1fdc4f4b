"""The writer appends the DP history of several written batches together and acknowledges their messages
only once that history is durable: shadows are written as fast as before, a bucket is written once per
device per interval, an outage keeps everything held and retries, and stopping appends what is held."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

import pytest
from pymongo.errors import AutoReconnect

from fleet_status.adapters.tuya import SchemaCache
from fleet_status.domain.shadow import AcceptedReading, DeviceFacts, DpReading, PresenceReport, StatusReport
from fleet_status.service_layer.writer import ShadowWriter
from tests.unit.status.fakes import FakeMessage, FakePublisher, FakeSchemaStore, FakeShadowStore

pytestmark = pytest.mark.unit


class CountingHistory:
    def __init__(self) -> None:
        self.calls: list[dict[str, list[int]]] = []
        self.fail_next = 0

    async def add(
        self,
        readings: Mapping[str, Sequence[AcceptedReading]],
        presence: Mapping[str, Sequence[PresenceReport]],
        now: datetime,
    ) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise AutoReconnect("database restarting (injected)")
        self.calls.append({d: [r.device_time_ms for r in rs] for d, rs in readings.items()})


def report(device: str, t: int) -> DeviceFacts:
    return DeviceFacts(device, (StatusReport((DpReading("temp", t, t),)),), product_id="p1")


async def test_history_of_several_batches_is_appended_once_and_only_then_are_messages_acked() -> None:
    clock = [0.0]
    store, history = FakeShadowStore(), CountingHistory()
    writer = ShadowWriter(
        store,
        history,
        SchemaCache(None, FakeSchemaStore()),
        FakePublisher(),
        tenant="t",
        region="eu",
        max_delay_s=0,
        history_delay_s=5.0,
        monotonic=lambda: clock[0],
    )
    messages = [FakeMessage() for _ in range(3)]
    for i, (device, t) in enumerate([("d1", 1), ("d1", 2), ("d2", 3)]):
        await writer.submit(report(device, t), messages[i], tenant="t", region="eu")
        await writer.flush_once()
        clock[0] += 1.0
    # every shadow is written at once; history and acknowledgements wait
    assert store.docs["d1"].shadow.dps["temp"].device_time_ms == 2
    assert "d2" in store.docs
    assert history.calls == []
    assert not any(m.acked for m in messages)

    history.fail_next = 1  # an outage: nothing is lost, nothing acked, retried later
    clock[0] += 5.0
    await writer.submit(report("d3", 4), FakeMessage(), tenant="t", region="eu")
    await writer.flush_once()
    await writer.history_settled()  # appends run beside the shadow flushes
    assert history.calls == []
    assert not any(m.acked or m.nacked for m in messages)
    assert not writer.ready()

    clock[0] += 5.0
    last = FakeMessage()
    await writer.submit(report("d1", 5), last, tenant="t", region="eu")
    await writer.flush_once()
    await writer.history_settled()
    assert history.calls == [{"d1": [1, 2, 5], "d2": [3], "d3": [4]}]  # one append for five batches
    assert all(m.acked for m in [*messages, last])

    # stopping appends what is held before the writer ends
    tail = FakeMessage()
    await writer.submit(report("d2", 6), tail, tenant="t", region="eu")
    writer.start()
    await writer.stop(5.0)
    assert history.calls[-1] == {"d2": [6]}
    assert tail.acked
