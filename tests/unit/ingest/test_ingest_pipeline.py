"""The consume pipeline with fakes at the adapter seam: order, ack-after-confirm, dedup, dead letters,
recovery from bus and database failures, graceful stop."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from fleet_contracts import topics
from fleet_ingest.adapters.dedup_store import InMemoryDedupStore
from fleet_ingest.adapters.metrics import IngestMetrics
from fleet_ingest.adapters.tracing import BatchTracing
from fleet_ingest.domain.dedup import SeenWindow
from fleet_ingest.domain.model import Project, TuyaDelivery
from fleet_ingest.service_layer.pipeline import IngestPipeline, PipelineConfig
from fleet_shared.tuya.codec import PushCodec
from tests.unit.ingest.fakes import FakeSink, FakeTuyaSource
from tests.unit.ingest.tuya_samples import ACCESS_ID, SECRET, T

pytestmark = pytest.mark.unit

CODEC = PushCodec(SECRET)
_seq = iter(range(10**9))
NOW_MS = int(time.time() * 1000) + 86_400_000  # published after the pipeline started


def status(
    device: str, n: int, *, publish_time_ms: int | None = None, message_id: str | None = None
) -> TuyaDelivery:
    data = {"dataId": f"{device}-{n}", "devId": device, "status": [{"code": "n", "value": n, "t": T + n}]}
    encoded = CODEC.encode(data, protocol=4, t=T + n)
    return TuyaDelivery(
        payload=encoded.payload(),
        properties=encoded.properties,
        message_id=message_id or f"m{next(_seq)}",
        topic=topics.tuya_event_topic(ACCESS_ID),
        key=device,
        publish_time_ms=publish_time_ms if publish_time_ms is not None else NOW_MS,
    )


def garbage() -> TuyaDelivery:
    return TuyaDelivery(
        payload=b"{not json", properties={}, message_id=f"g{next(_seq)}", topic="t", publish_time_ms=NOW_MS
    )


class Harness:
    def __init__(self, **config: Any) -> None:
        self.source = FakeTuyaSource()
        self.sink = FakeSink()
        self.store = InMemoryDedupStore()
        self.registry = CollectorRegistry()
        self.exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.pipeline = IngestPipeline(
            source=self.source,
            sink=self.sink,
            store=self.store,
            codec=CODEC,
            project=Project(access_id=ACCESS_ID, region="eu"),
            metrics=IngestMetrics(self.registry),
            window=SeenWindow(ttl_s=3600, max_entries=10_000),
            config=PipelineConfig(
                recovery_backoff_s=0.01, record_interval_s=0.01, settle_timeout_s=1, **config
            ),
            tracing=BatchTracing(
                provider.get_tracer("test"), topic=self.source.topic, subscription=self.source.subscription
            ),
        )

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    def published(self) -> list[tuple[str, int]]:
        out = []
        for body, _key, _props in self.sink.events:
            event = orjson.loads(body)
            out.append((event["data"]["device_id"], event["data"]["dps"][0]["value"]))
        return out


@asynccontextmanager
async def running(h: Harness) -> AsyncIterator[Harness]:
    task = asyncio.ensure_future(h.pipeline.run())
    try:
        yield h
    finally:
        await h.pipeline.stop(2.0)
        await asyncio.wait_for(task, 5)


async def until(predicate: Callable[[], bool], within: float = 5.0) -> None:
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 - polling state changed by the pipeline's tasks
            await asyncio.sleep(0.005)


async def test_publishes_in_receive_order_keyed_by_device_and_acks_everything() -> None:
    h = Harness()
    messages = [status(f"dev{d}", n) for n in range(20) for d in range(5)]
    h.source.push(*messages)
    async with running(h):
        await until(lambda: len(h.source.acked) == 100)
    assert h.published() == [(f"dev{d}", n) for n in range(20) for d in range(5)]
    assert [key for _, key, _ in h.sink.events][:5] == [f"dev{d}" for d in range(5)]
    props = h.sink.events[0][2]
    assert props["content-type"] == "application/json"
    assert "traceparent" in props
    assert props["tuya-message-id"] == messages[0].message_id
    assert h.metric("fleet_ingest_events_published_total", type="device.status.reported.v1") == 100
    assert h.metric("fleet_ingest_messages_received_total") == 100


async def test_acks_only_after_the_publish_is_confirmed_and_pipelines_sends() -> None:
    h = Harness(max_in_flight=10)
    h.sink.hold = True
    h.source.push(*[status("dev", n) for n in range(30)])
    async with running(h):
        await until(lambda: len(h.sink.held) == 10)
        await asyncio.sleep(0.02)
        assert h.source.acked == []  # ten sends in flight at once, none confirmed, nothing acked
        assert len(h.sink.held) == 10  # the in-flight window bounds what is outstanding
        h.sink.hold = False
        h.sink.release()
        await until(lambda: len(h.source.acked) == 30)
    assert [v for _, v in h.published()] == list(range(30))
    await until(lambda: len(h.store.keys) == 30)  # seen only once confirmed, recorded in batches


async def test_duplicates_are_dropped_whether_in_flight_or_already_seen_and_acked() -> None:
    h = Harness()
    h.sink.hold = True
    first = status("dev", 1)
    h.source.push(first, status("dev", 1))  # Tuya's duplicate arrives while the first is in flight
    async with running(h):
        await until(lambda: len(h.sink.held) == 1)
        await asyncio.sleep(0.02)
        assert h.source.acked == []  # acks go in receive order: the duplicate waits for the original
        h.sink.hold = False
        h.sink.release()
        await until(lambda: len(h.source.acked) == 2)
        h.source.push(status("dev", 1))  # and again later: the seen-window drops it
        await until(lambda: len(h.source.acked) == 3)
        await until(lambda: len(h.store.keys) == 1)
    assert h.published() == [("dev", 1)]
    assert h.metric("fleet_ingest_duplicates_dropped_total", source="in_flight") == 1
    assert h.metric("fleet_ingest_duplicates_dropped_total", source="window") == 1


async def test_backlog_from_before_start_is_checked_against_the_store() -> None:
    h = Harness()
    already = status("dev", 1, publish_time_ms=1)
    h.store.keys.add("4:data:dev:dev-1")
    h.source.push(already, status("dev", 2, publish_time_ms=1))
    async with running(h):
        await until(lambda: len(h.source.acked) == 2)
    assert h.published() == [("dev", 2)]
    assert h.metric("fleet_ingest_duplicates_dropped_total", source="store") == 1


async def test_a_late_re_push_after_a_restart_is_checked_against_the_store() -> None:
    # A previous process published and recorded dev-1; Tuya pushes it again after this one started.
    h = Harness()
    h.store.keys.add("4:data:dev:dev-1")
    async with running(h):
        h.source.push(status("dev", 1), status("dev", 2), status("dev", 1))
        await until(lambda: len(h.source.acked) == 3)
        await until(lambda: "4:data:dev:dev-2" in h.store.keys)
        h.source.push(status("dev", 1), status("dev", 2))  # again: the window knows both by now
        await until(lambda: len(h.source.acked) == 5)
    assert h.published() == [("dev", 2)]
    assert h.metric("fleet_ingest_duplicates_dropped_total", source="store") == 1
    assert h.metric("fleet_ingest_duplicates_dropped_total", source="window") == 3


async def test_store_lookups_are_batched_and_skip_what_the_window_knows() -> None:
    h = Harness()
    calls: list[list[str]] = []
    seen = h.store.seen

    async def counting(keys: Any) -> set[str]:
        calls.append(list(keys))
        return await seen(keys)

    h.store.seen = counting  # type: ignore[method-assign]
    h.source.push(*[status(f"dev{d}", n) for n in range(20) for d in range(10)])
    async with running(h):
        await until(lambda: len(h.source.acked) == 200)
        looked_up = sum(len(c) for c in calls)
        h.source.push(*[status(f"dev{d}", n) for n in range(20) for d in range(10)])  # all in the window
        await until(lambda: len(h.source.acked) == 400)
    assert looked_up == 200
    assert sum(len(c) for c in calls) == 200  # the window's hits cost no lookup
    assert len(calls) < 200  # batched, not one query per message
    assert len(h.published()) == 200


async def test_undecodable_input_is_dead_lettered_with_reason_and_acked_and_the_stream_goes_on() -> None:
    h = Harness()
    h.source.push(status("dev", 1), garbage(), status("dev", 2))
    async with running(h):
        await until(lambda: len(h.source.acked) == 3)
    assert h.published() == [("dev", 1), ("dev", 2)]
    [(body, _, _)] = h.sink.dead_letters
    dead = topics.INGEST_TUYA_DEAD_LETTER.decode(body)
    assert dead.data.error_type == "envelope"
    assert dead.data.payload_base64
    assert h.metric("fleet_ingest_messages_rejected_total", reason="envelope") == 1


async def test_a_failed_publish_acks_nothing_more_and_everything_is_redelivered_in_order() -> None:
    h = Harness(max_in_flight=5)
    h.source.push(*[status("dev", n) for n in range(10)])
    h.sink.fail_next = 0
    async with running(h):
        await until(lambda: len(h.source.acked) == 10)
        h.sink.fail_next = 1
        h.source.push(*[status("dev", n) for n in range(10, 30)])
        await until(lambda: len(h.source.acked) == 30)
    assert [v for _, v in h.published()] == list(range(30))  # nothing lost, nothing twice, in order
    assert h.source.subscriptions == 2
    assert h.metric("fleet_ingest_recoveries_total", cause="publish") == 1


async def test_hostile_publish_times_are_dead_lettered_not_fatal() -> None:
    h = Harness()
    h.source.push(
        TuyaDelivery(payload=b"{}", properties={}, message_id="x", topic="t", publish_time_ms=2**62),
        status("dev", 1),
    )
    async with running(h):
        await until(lambda: len(h.source.acked) == 2)
    assert h.published() == [("dev", 1)]
    assert len(h.sink.dead_letters) == 1


async def test_a_dedup_store_outage_is_retried_never_skipped() -> None:
    h = Harness()
    h.store.fail_lookups = True
    h.source.push(status("dev", 1, publish_time_ms=1))
    async with running(h):
        await until(lambda: h.metric("fleet_ingest_recoveries_total", cause="lookup") >= 1)
        assert h.source.acked == []
        h.store.fail_lookups = False
        await until(lambda: len(h.source.acked) == 1)
    assert h.published() == [("dev", 1)]


async def test_stop_finishes_what_is_in_flight() -> None:
    h = Harness()
    h.sink.hold = True
    h.source.push(*[status("dev", n) for n in range(5)])
    task = asyncio.ensure_future(h.pipeline.run())
    await until(lambda: len(h.sink.held) == 5)
    stopping = asyncio.ensure_future(h.pipeline.stop(5))
    await asyncio.sleep(0.02)
    h.sink.hold = False
    h.sink.release()
    await stopping
    await task
    assert len(h.source.acked) == 5
    assert len(h.store.keys) == 5


async def test_spans_link_consume_and_publish() -> None:
    h = Harness()
    h.source.push(status("dev", 1))
    async with running(h):
        await until(lambda: len(h.source.acked) == 1)
    spans = {s.name: s for s in h.exporter.get_finished_spans()}
    consume = spans[f"process {h.source.topic}"]
    publish = spans[f"send {topics.DEVICE_EVENTS.name}"]
    assert publish.parent is not None
    assert publish.parent.span_id == consume.context.span_id
    traceparent = h.sink.events[0][2]["traceparent"]
    assert f"{publish.context.trace_id:032x}" in traceparent


async def test_a_batch_shares_one_trace_and_a_message_with_its_own_traceparent_continues_it() -> None:
    h = Harness()
    incoming_trace = "0af7651916cd43dd8448eb211c80319c"
    traced = status("dev", 2)
    traced = dataclasses.replace(
        traced, properties={**traced.properties, "traceparent": f"00-{incoming_trace}-b7ad6b7169203331-01"}
    )
    h.source.push(status("dev", 1), traced, status("dev", 3))
    async with running(h):
        await until(lambda: len(h.source.acked) == 3)
    parents = [props["traceparent"].split("-")[1] for _, _, props in h.sink.events]
    assert parents[1] == incoming_trace
    assert parents[0] == parents[2] != incoming_trace  # the batch's own trace
    assert len(h.exporter.get_finished_spans()) == 4  # a consume + publish pair per trace, not per message
