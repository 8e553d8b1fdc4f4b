"""The consume loop's parts on their own: the duplicate decision and the seen-key recorder."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client import Counter as PromCounter

from fleet_ingest.adapters.dedup_store import InMemoryDedupStore
from fleet_ingest.domain.dedup import SeenWindow
from fleet_ingest.service_layer.dedup import duplicate_source
from fleet_ingest.service_layer.recorder import SeenRecorder

pytestmark = pytest.mark.unit


def test_duplicate_source_checks_in_flight_then_window_then_store() -> None:
    window = SeenWindow(ttl_s=60, max_entries=100)
    in_flight: Counter[str] = Counter({"a": 1})
    window.add("b", 0.0)

    def source(key: str, store: set[str]) -> str | None:
        return duplicate_source(key, in_flight=in_flight, window=window, seen_in_store=store, now=1.0)

    assert source("a", {"a"}) == "in_flight"
    assert source("b", {"b"}) == "window"
    assert source("c", {"c"}) == "store"
    assert source("c", set()) == "window"  # a store hit is remembered by the window
    assert source("d", set()) is None
    assert "a" not in window
    assert "d" not in window
    assert in_flight == Counter({"a": 1})  # the decision reserves nothing


class FlakyStore(InMemoryDedupStore):
    def __init__(self) -> None:
        super().__init__()
        self.fail_records = False
        self.writes: list[list[str]] = []

    async def record(self, keys: Sequence[str]) -> None:
        if self.fail_records:
            raise ConnectionError("dedup store unavailable")
        self.writes.append(list(keys))
        await super().record(keys)


def recorder(store: FlakyStore, errors: PromCounter, **overrides: float) -> SeenRecorder:
    options: dict[str, float] = {
        "batch": 3,
        "interval_s": 0.01,
        "backlog_limit": 5,
        "expire_interval_s": 300.0,
        "timeout_s": 1.0,
    }
    options.update(overrides)
    return SeenRecorder(
        store,
        errors,
        batch=int(options["batch"]),
        interval_s=options["interval_s"],
        backlog_limit=int(options["backlog_limit"]),
        expire_interval_s=options["expire_interval_s"],
        timeout_s=options["timeout_s"],
    )


async def test_recorder_writes_in_batches_and_keeps_the_newest_keys_through_a_failure() -> None:
    registry = CollectorRegistry()
    errors = PromCounter("errors", "test", registry=registry)
    store = FlakyStore()
    seen = recorder(store, errors)
    for key in "abcdefg":
        seen.add(key)
    await seen.flush()
    assert store.writes == [["a", "b", "c"], ["d", "e", "f"], ["g"]]

    store.fail_records = True
    for key in "hijklmnop":
        seen.add(key)
    await seen.flush()
    assert registry.get_sample_value("errors_total") == 1
    store.fail_records = False
    await seen.flush()
    # Nine waited, five are kept: the oldest go (the window still has them; consumers dedupe by event id).
    assert store.writes[3:] == [["l", "m", "n"], ["o", "p"]]


async def test_recorder_run_writes_a_full_batch_when_nudged() -> None:
    errors = PromCounter("errors", "test", registry=CollectorRegistry())
    store = FlakyStore()
    seen = recorder(store, errors, interval_s=60.0)
    task = asyncio.ensure_future(seen.run())
    try:
        seen.add("a")
        seen.nudge()  # not a full batch: waits for the interval
        await asyncio.sleep(0.05)
        assert store.writes == []
        seen.add("b")
        seen.add("c")
        seen.nudge()
        async with asyncio.timeout(2):
            while not store.writes:  # noqa: ASYNC110 - the recorder's task writes
                await asyncio.sleep(0.005)
        assert store.writes == [["a", "b", "c"]]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
