"""The broker's producer: one Pulsar producer per topic; sends reach the client in call order."""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

import pulsar
import pytest
from faststream.response.publish_type import PublishType
from pulsar.asyncio import PulsarException

from fleet_shared.pulsar.message import PulsarPublishCommand, new_correlation_id
from fleet_shared.pulsar.producer import PulsarProducer, _SendResults

pytestmark = pytest.mark.unit


class RecordingProducer:
    """Like `pulsar.asyncio.Producer`: the message is queued when `send` starts, confirmed later."""

    def __init__(self, queued: list[bytes]) -> None:
        self.queued = queued

    async def send(self, content: bytes, **_: Any) -> str:
        self.queued.append(content)
        message_id = f"id-{len(self.queued)}"
        await asyncio.sleep(0.001)
        return message_id

    def is_connected(self) -> bool:
        return True

    async def flush(self) -> None: ...

    async def close(self) -> None: ...


class SlowClient:
    """Creates producers only once `ready` is set, counting creations."""

    def __init__(self) -> None:
        self.ready = asyncio.Event()
        self.created: list[str] = []
        self.queued: list[bytes] = []

    async def create_producer(self, topic: str, **_: Any) -> RecordingProducer:
        self.created.append(topic)
        await self.ready.wait()
        return RecordingProducer(self.queued)


def command(body: bytes) -> PulsarPublishCommand:
    return PulsarPublishCommand(body, topic="t", _publish_type=PublishType.PUBLISH)


async def test_concurrent_first_sends_create_one_producer_and_keep_call_order() -> None:
    client = SlowClient()
    producer = PulsarProducer(reply_topic="replies")
    producer.connect(client, None, None)  # type: ignore[arg-type]

    first = [asyncio.create_task(producer.publish(command(b))) for b in (b"a", b"b")]
    await asyncio.sleep(0.01)  # both wait for the producer being created
    client.ready.set()
    # Made after those two, and runnable before either of them resumes: it must not overtake them.
    later = asyncio.create_task(producer.publish(command(b"c")))
    ids = await asyncio.gather(*first, later)

    assert client.created == ["t"]
    assert client.queued == [b"a", b"b", b"c"]
    assert len(set(ids)) == 3
    # Once the first sends are handed over, later ones take the direct path.
    await producer.publish(command(b"d"))
    assert client.queued[-1] == b"d"
    assert not producer._first_sends


async def test_a_failed_creation_fails_its_send_and_the_next_send_retries() -> None:
    client = SlowClient()
    client.ready.set()
    attempts = 0
    create = client.create_producer

    async def flaky(topic: str, **kwargs: Any) -> RecordingProducer:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise ConnectionError("broker away")
        return await create(topic, **kwargs)

    client.create_producer = flaky  # type: ignore[method-assign]
    producer = PulsarProducer(reply_topic="replies")
    producer.connect(client, None, None)  # type: ignore[arg-type]

    with pytest.raises(ConnectionError):
        await producer.publish(command(b"a"))
    await producer.publish(command(b"b"))
    assert client.queued == [b"b"]
    assert not producer._first_sends


def test_correlation_ids_are_distinct_version_4_uuids() -> None:
    ids = [new_correlation_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    for text in ids[:100]:
        parsed = uuid.UUID(text)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == text


class NativeId:
    """Stands in for the native id the client confirms a send with."""

    def __init__(self, entry: int) -> None:
        self.entry = entry

    def partition(self) -> int:
        return -1

    def ledger_id(self) -> int:
        return 7

    def entry_id(self) -> int:
        return self.entry

    def batch_index(self) -> int:
        return -1


class ThreadedNative:
    """Like the client's producer: `send_async` queues; `confirm` answers every queued send from a thread of
    its own, in order, as the client does once a batch is persisted."""

    def __init__(self) -> None:
        self.queued: list[tuple[Any, Any]] = []

    def send_async(self, message: Any, callback: Any) -> None:
        self.queued.append((message, callback))

    def confirm(self, result: Any = pulsar.Result.Ok) -> None:
        queued, self.queued = self.queued, []

        def answer() -> None:
            for entry, (_message, callback) in enumerate(queued):
                callback(result, NativeId(entry))

        thread = threading.Thread(target=answer)
        thread.start()
        thread.join()


class CountingResults(_SendResults):
    runs = 0

    def _complete(self) -> None:
        self.runs += 1
        super()._complete()


async def settled(futures: list[asyncio.Future[Any]]) -> None:
    async with asyncio.timeout(5):
        while not all(f.done() for f in futures):  # noqa: ASYNC110 - completed by the loop's own callback
            await asyncio.sleep(0.001)


async def test_a_burst_of_confirmations_completes_each_send_in_order_with_one_wake_up() -> None:
    results = CountingResults()
    native = ThreadedNative()
    futures = [results.send(native, f"m{i}") for i in range(5)]
    futures[2].cancel()  # its publisher gave up: the others complete all the same

    native.confirm()
    await settled(futures)

    assert results.runs == 1
    assert [f.result().entry_id() for f in futures if not f.cancelled()] == [0, 1, 3, 4]
    assert str(futures[0].result()) == str(pulsar.MessageId(-1, 7, 0, -1))


async def test_a_failed_send_raises_what_pulsar_asyncio_raises() -> None:
    results = _SendResults()
    native = ThreadedNative()
    futures = [results.send(native, "m")]
    native.confirm(pulsar.Result.Timeout)
    await settled(futures)
    with pytest.raises(PulsarException) as failed:
        futures[0].result()
    assert failed.value.error() == pulsar.Result.Timeout
