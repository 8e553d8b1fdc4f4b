"""PulsarBroker under TestPulsarBroker: FastStream features and Pulsar's ack/nack/dead-letter semantics."""

from __future__ import annotations

import asyncio
import base64
import threading
from typing import Annotated, Any

import orjson
import pytest
from fastapi import Depends as FastAPIDepends
from fastapi import FastAPI
from faststream import Context, Depends
from faststream._internal.context import Context as ContextField
from faststream._internal.middlewares import BaseMiddleware
from faststream.exceptions import NackMessage, RejectMessage
from faststream.middlewares import AckPolicy
from faststream.specification import AsyncAPI
from faststream_fastapi import FastStreamAPI
from pydantic import BaseModel, ValidationError

from fleet_contracts import deadletter
from fleet_contracts.deadletter import MessageDeadLetteredEvent
from fleet_shared.pulsar import (
    DLQ_ERROR,
    DLQ_ERROR_TYPE,
    DLQ_ORIGINAL_TOPIC,
    DLQ_REDELIVERY_COUNT,
    ConsumerType,
    DeadLetter,
    InlineContext,
    PulsarBroker,
    PulsarMessage,
    PulsarResponse,
    PulsarRouter,
    TestPulsarBroker,
)
from fleet_shared.pulsar.workers import KeyOrderedWorkers

pytestmark = pytest.mark.unit


class Reading(BaseModel):
    device_id: str
    value: int


async def test_handler_gets_a_validated_body() -> None:
    broker = PulsarBroker()
    seen: list[Reading] = []

    @broker.subscriber("readings", subscription="status")
    async def on_reading(reading: Reading) -> None:
        seen.append(reading)

    async with TestPulsarBroker(broker) as br:
        # a plain handler is called without FastDepends' per-message wrapper (handler_call.py)
        [item] = broker.subscribers[0].calls
        assert "direct_call" in item.handler._wrapped_call.__qualname__  # type: ignore[union-attr]
        await br.publish(Reading(device_id="d1", value=3), "readings", key="d1")
        on_reading.mock.assert_called_once_with({"device_id": "d1", "value": 3})

    assert seen == [Reading(device_id="d1", value=3)]


async def test_success_is_acked_and_metadata_reaches_the_handler() -> None:
    broker = PulsarBroker()
    got: dict[str, Any] = {}

    @broker.subscriber("readings", subscription="status")
    async def on_reading(reading: Reading, message: Annotated[PulsarMessage, Context("message")]) -> None:
        got.update(key=message.key, headers=message.headers, count=message.redelivery_count)

    async with TestPulsarBroker(broker) as br:
        await br.publish(Reading(device_id="d1", value=1), "readings", key="d1", headers={"tenant": "t1"})
        consumer = on_reading._subscribers[0]._consumer  # type: ignore[attr-defined]
        assert len(consumer.acked) == 1
        assert consumer.nacked == []

    assert got["key"] == "d1"
    assert got["headers"]["tenant"] == "t1"
    assert got["headers"]["content-type"] == "application/json"
    assert got["count"] == 0


async def test_failure_is_nacked_and_redelivered_with_an_incremented_count() -> None:
    broker = PulsarBroker()
    counts: list[int] = []

    @broker.subscriber("readings", subscription="status")
    async def flaky(reading: Reading, message: Annotated[PulsarMessage, Context("message")]) -> None:
        counts.append(message.redelivery_count)
        if len(counts) < 3:
            raise ConnectionError("database unavailable")

    async with TestPulsarBroker(broker) as br:
        await br.publish(Reading(device_id="d1", value=1), "readings")
        consumer = flaky._subscribers[0]._consumer  # type: ignore[attr-defined]
        assert len(consumer.nacked) == 2
        assert len(consumer.acked) == 1

    assert counts == [0, 1, 2]


async def test_dead_letter_after_n_redeliveries_records_the_error() -> None:
    broker = PulsarBroker()
    attempts: list[int] = []
    dead: list[tuple[dict[str, Any], dict[str, str]]] = []

    @broker.subscriber("readings", subscription="status", dead_letter=DeadLetter(max_redeliveries=2))
    async def always_fails(reading: Reading, message: Annotated[PulsarMessage, Context("message")]) -> None:
        attempts.append(message.redelivery_count)
        raise ValueError(f"bad reading {reading.value}")

    @broker.subscriber("readings-status-DLQ", subscription="ops")
    async def on_dead(body: dict[str, Any], message: Annotated[PulsarMessage, Context("message")]) -> None:
        dead.append((body, message.headers))

    async with TestPulsarBroker(broker) as br:
        await br.publish(Reading(device_id="d1", value=7), "readings", key="d1")

    assert attempts == [0, 1, 2]
    [(body, props)] = dead
    # The contract event, the original bytes inside (fleet_contracts.deadletter).
    event = MessageDeadLetteredEvent.model_validate(body)
    assert orjson.loads(base64.b64decode(event.data.payload_base64)) == {"device_id": "d1", "value": 7}
    assert event.data.properties["content-type"] == "application/json"
    assert (event.data.key, event.data.subscription, event.data.redelivery_count) == ("d1", "status", 2)
    assert (event.data.error_type, event.data.reason) == ("ValueError", "bad reading 7")
    assert event.data.topic == "persistent://public/default/readings"
    assert (event.tenant, event.region, event.source) == ("unknown", "unknown", "/fleet/status")
    # The same facts as Pulsar properties, named as the contract documents them.
    assert set(deadletter.DEAD_LETTER_PROPERTIES) <= set(props)
    assert props[DLQ_ERROR] == "bad reading 7"
    assert props[DLQ_ERROR_TYPE] == "ValueError"
    assert props[DLQ_ORIGINAL_TOPIC] == props["REAL_TOPIC"] == "persistent://public/default/readings"
    assert props["ORIGIN_MESSAGE_ID"] == event.data.message_id
    assert props[DLQ_REDELIVERY_COUNT] == "2"


async def test_a_dead_letter_takes_tenant_and_region_from_the_original_envelope() -> None:
    broker = PulsarBroker()
    dead: list[MessageDeadLetteredEvent] = []

    @broker.subscriber("readings", subscription="status", dead_letter=DeadLetter(max_redeliveries=0))
    async def gives_up(body: dict[str, Any]) -> None:
        raise NackMessage

    @broker.subscriber("readings-status-DLQ", subscription="ops")
    async def on_dead(event: MessageDeadLetteredEvent) -> None:
        dead.append(event)

    async with TestPulsarBroker(broker) as br:
        await br.publish({"tenant": "acc1", "region": "eu", "data": {}}, "readings", key="d1")
        await br.publish({"tenant": "acc1", "region": "eu", "data": {}}, "readings", key="d1")

    first, again = dead
    assert (first.tenant, first.region, first.data.error_type) == ("acc1", "eu", "nacked")
    assert first.id != again.id  # two messages; one message dead-lettered twice would keep its id


async def test_invalid_body_is_dead_lettered_with_the_validation_error() -> None:
    broker = PulsarBroker()
    dead: list[dict[str, str]] = []

    @broker.subscriber(
        "readings", subscription="status", dead_letter=DeadLetter(max_redeliveries=0, topic="bad")
    )
    async def on_reading(reading: Reading) -> None:
        raise AssertionError("never called with an invalid body")

    @broker.subscriber("bad", subscription="ops")
    async def on_dead(message: Annotated[PulsarMessage, Context("message")]) -> None:
        dead.append(message.headers)

    async with TestPulsarBroker(broker) as br:
        await br.publish({"device_id": "d1"}, "readings")

    assert dead[0][DLQ_ERROR_TYPE] == ValidationError.__qualname__
    assert "value" in dead[0][DLQ_ERROR]


async def test_reject_dead_letters_at_once() -> None:
    broker = PulsarBroker()
    dead: list[str] = []

    @broker.subscriber(
        "readings", subscription="status", dead_letter=DeadLetter(max_redeliveries=5, topic="dlq")
    )
    async def on_reading(reading: Reading) -> None:
        raise RejectMessage

    @broker.subscriber("dlq", subscription="ops")
    async def on_dead(message: Annotated[PulsarMessage, Context("message")]) -> None:
        dead.append(message.headers[DLQ_REDELIVERY_COUNT])

    async with TestPulsarBroker(broker) as br:
        await br.publish(Reading(device_id="d1", value=1), "readings")
        on_reading.mock.assert_called_once()

    assert dead == ["0"]


async def test_nack_without_dead_letter_raises_after_the_redelivery_limit() -> None:
    broker = PulsarBroker()

    @broker.subscriber("readings", subscription="status")
    async def broken(reading: Reading) -> None:
        raise KeyError("no shadow")

    async with TestPulsarBroker(broker, redelivery_limit=3) as br:
        with pytest.raises(KeyError):
            await br.publish(Reading(device_id="d1", value=1), "readings")
        assert broken.mock.call_count == 4


async def test_ack_policy_ack_swallows_the_error_like_the_real_broker() -> None:
    broker = PulsarBroker()

    @broker.subscriber("readings", subscription="status", ack_policy=AckPolicy.ACK)
    async def broken(reading: Reading) -> None:
        raise KeyError("no shadow")

    async with TestPulsarBroker(broker) as br:
        await br.publish(Reading(device_id="d1", value=1), "readings")
        assert len(broken._subscribers[0]._consumer.acked) == 1  # type: ignore[attr-defined]


async def test_return_value_is_republished_with_the_response_key() -> None:
    broker = PulsarBroker()
    out: list[tuple[dict[str, Any], str]] = []

    @broker.subscriber("readings", subscription="status")
    @broker.publisher("changes")
    async def on_reading(reading: Reading) -> PulsarResponse:
        return PulsarResponse({"device_id": reading.device_id, "changed": True}, key=reading.device_id)

    @broker.subscriber("changes", subscription="audit")
    async def on_change(body: dict[str, Any], message: Annotated[PulsarMessage, Context("message")]) -> None:
        out.append((body, message.key))

    async with TestPulsarBroker(broker) as br:
        await br.publish(Reading(device_id="d9", value=1), "readings")

    assert out == [({"device_id": "d9", "changed": True}, "d9")]


async def test_publisher_mock_records_what_a_handler_returned() -> None:
    broker = PulsarBroker()
    changes = broker.publisher("changes", key="fixed")

    @broker.subscriber("readings", subscription="status")
    @changes
    async def on_reading(reading: Reading) -> dict[str, int]:
        return {"value": reading.value * 2}

    async with TestPulsarBroker(broker) as br:
        await br.publish(Reading(device_id="d1", value=21), "readings")
        changes.mock.assert_called_once_with({"value": 42})


async def test_one_delivery_per_subscription_name() -> None:
    broker = PulsarBroker()
    calls: list[str] = []

    @broker.subscriber("readings", subscription="status")
    async def replica_a(body: dict[str, Any]) -> None:
        calls.append("a")

    @broker.subscriber("readings", subscription="status")
    async def replica_b(body: dict[str, Any]) -> None:
        calls.append("b")

    @broker.subscriber(pattern="persistent://public/default/read.*", subscription="archive")
    async def archive(body: dict[str, Any]) -> None:
        calls.append("archive")

    async with TestPulsarBroker(broker) as br:
        await br.publish({"x": 1}, "readings")

    # The two replicas share "status": exactly one of them gets the message; "archive" gets its own copy.
    assert sorted(calls) in (["a", "archive"], ["archive", "b"])


async def test_middlewares_wrap_consume_and_publish() -> None:
    events: list[str] = []

    class Recorder(BaseMiddleware):
        async def consume_scope(self, call_next: Any, msg: Any) -> Any:
            events.append(f"consume:{msg.raw_message.topic_name()}")
            return await call_next(msg)

        async def publish_scope(self, call_next: Any, cmd: Any) -> Any:
            events.append(f"publish:{cmd.destination}")
            return await call_next(cmd)

    broker = PulsarBroker(middlewares=[Recorder])

    @broker.subscriber("readings", subscription="status")
    async def on_reading(body: dict[str, Any]) -> None:
        pass

    async with TestPulsarBroker(broker) as br:
        await br.publish({"x": 1}, "readings")

    assert events == ["publish:readings", "consume:persistent://public/default/readings"]


async def test_dependencies_are_injected() -> None:
    broker = PulsarBroker()
    got: list[tuple[str, str]] = []

    def tenant(message: Annotated[PulsarMessage, Context("message")]) -> str:
        return message.headers["tenant"]

    @broker.subscriber("readings", subscription="status")
    async def on_reading(reading: Reading, tenant_id: Annotated[str, Depends(tenant)]) -> None:
        got.append((reading.device_id, tenant_id))

    async with TestPulsarBroker(broker) as br:
        await br.publish(Reading(device_id="d1", value=1), "readings", headers={"tenant": "acme"})

    assert got == [("d1", "acme")]


async def test_router_prefixes_topics() -> None:
    router = PulsarRouter(prefix="persistent://fleet/status/")
    seen: list[str] = []

    @router.subscriber("reported", subscription="status")
    async def on_reported(
        body: dict[str, Any], message: Annotated[PulsarMessage, Context("message")]
    ) -> None:
        seen.append(message.topic)

    broker = PulsarBroker()
    broker.include_router(router)

    async with TestPulsarBroker(broker) as br:
        await br.publish({"x": 1}, "persistent://fleet/status/reported")

    assert seen == ["persistent://fleet/status/reported"]


async def test_request_reply() -> None:
    broker = PulsarBroker()

    @broker.subscriber("double", subscription="rpc")
    async def double(body: dict[str, int]) -> dict[str, int]:
        return {"value": body["value"] * 2}

    async with TestPulsarBroker(broker) as br:
        reply = await br.request({"value": 21}, "double")

    assert await reply.decode() == {"value": 42}


def region() -> str:
    return "eu"


async def test_fastapi_integration_injects_fastapi_dependencies() -> None:
    broker = PulsarBroker()
    got: list[str] = []

    @broker.subscriber("readings", subscription="status")
    async def on_reading(reading: Reading, where: Annotated[str, FastAPIDepends(region)]) -> None:
        got.append(f"{reading.device_id}@{where}")

    FastStreamAPI(broker, application=FastAPI())

    async with TestPulsarBroker(broker) as br:
        await br.publish(Reading(device_id="d1", value=1), "readings")

    assert got == ["d1@eu"]


def test_asyncapi_lists_subscriber_and_publisher_channels() -> None:
    broker = PulsarBroker("pulsar://pulsar:6650")

    @broker.subscriber(
        ["readings", "alarms"], subscription="status", subscription_type=ConsumerType.KeyShared
    )
    @broker.publisher("changes")
    async def on_reading(reading: Reading) -> Reading:
        return reading

    doc = AsyncAPI(broker, schema_version="3.0.0").to_specification().to_jsonable()

    addresses = {c["address"] for c in doc["channels"].values()}
    assert {"readings", "alarms", "changes"} <= addresses
    assert doc["servers"]["development"]["protocol"] == "pulsar"
    assert "Reading" in str(doc["components"]["schemas"])


async def test_key_ordered_workers_keep_per_key_order_and_run_keys_in_parallel() -> None:
    handled: dict[str, list[int]] = {}
    running = 0
    peak = 0
    all_done = asyncio.Event()

    async def handle(item: tuple[str, int]) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.001 * (item[1] % 3))
        handled.setdefault(item[0], []).append(item[1])
        running -= 1
        if sum(len(v) for v in handled.values()) == 200:
            all_done.set()

    workers: KeyOrderedWorkers[tuple[str, int]] = KeyOrderedWorkers(4, handle)
    workers.start()
    for i in range(200):
        key = f"k{i % 10}"
        await workers.put(key, (key, i))
    await asyncio.wait_for(all_done.wait(), 10)
    await workers.stop()

    assert all(v == sorted(v) for v in handled.values())
    assert peak > 1


async def test_inline_context_resolves_the_message_on_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """`Context` fields are resolved in a worker thread (a hop per message); `InlineContext` on the loop."""
    resolved_in: list[int] = []
    resolve = ContextField.use

    def recording_use(self: ContextField, /, **kwargs: Any) -> dict[str, Any]:
        resolved_in.append(threading.get_ident())
        return resolve(self, **kwargs)

    monkeypatch.setattr(ContextField, "use", recording_use)
    broker = PulsarBroker()
    got: list[str | None] = []

    @broker.subscriber("readings", subscription="status")
    async def on_reading(message: Annotated[PulsarMessage, InlineContext("message")]) -> None:
        got.append(message.key)

    async with TestPulsarBroker(broker) as br:
        await br.publish(Reading(device_id="d1", value=3), "readings", key="d1")

    assert got == ["d1"]
    assert resolved_in == [threading.get_ident()]
