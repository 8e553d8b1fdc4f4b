"""The per-message fast paths keep FastStream's semantics: process_message, in-flight lock, flusher."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from faststream._internal.constants import EMPTY
from faststream._internal.endpoint.subscriber.usecase import SubscriberUsecase
from faststream._internal.middlewares import BaseMiddleware
from faststream.exceptions import SubscriberNotFound
from faststream.middlewares.logging import CriticalLogMiddleware

from fleet_shared.pulsar import PulsarBroker, TestPulsarBroker
from fleet_shared.pulsar.acknowledgement import AcknowledgementFactory
from fleet_shared.pulsar.producer import _BatchFlusher, _Slots
from fleet_shared.pulsar.subscriber import _InFlight
from fleet_shared.pulsar.testing import FakeMessage

pytestmark = pytest.mark.unit

# PulsarSubscriber.process_message mirrors this FastStream source step for step. When an upgrade changes
# it, re-read the new version, port the change, then update the digest.
MIRRORED_PROCESS_MESSAGE = "aa3ed06c328d92ab"


def test_process_message_mirrors_the_faststream_version_it_was_written_against() -> None:
    source = inspect.getsource(SubscriberUsecase.process_message)
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    assert digest == MIRRORED_PROCESS_MESSAGE, (
        "FastStream's SubscriberUsecase.process_message changed: port the change to "
        f"PulsarSubscriber.process_message, then set MIRRORED_PROCESS_MESSAGE = {digest!r}"
    )


class Recording(BaseMiddleware):
    """Records the middleware protocol calls in order, across two instances."""

    log: list[str]

    async def on_receive(self) -> None:
        self.log.append(f"{self.name}:enter")

    async def consume_scope(self, call_next: Any, msg: Any) -> Any:
        self.log.append(f"{self.name}:consume")
        return await call_next(msg)

    async def after_processed(
        self,
        exc_type: type[BaseException] | None = None,
        exc_val: BaseException | None = None,
        exc_tb: Any = None,
    ) -> bool | None:
        self.log.append(f"{self.name}:exit:{type(exc_val).__name__ if exc_val else None}")
        return self.suppress and exc_val is not None


def recording(name: str, log: list[str], *, suppress: bool = False) -> Any:
    def factory(msg: Any, /, *, context: Any) -> Recording:
        m = Recording(msg, context=context)
        m.name, m.log, m.suppress = name, log, suppress  # type: ignore[attr-defined]
        return m

    return factory


async def test_middlewares_enter_and_exit_in_order_and_see_the_error() -> None:
    log: list[str] = []
    broker = PulsarBroker(middlewares=[recording("outer", log), recording("inner", log)])

    @broker.subscriber("t", subscription="s")
    async def fails(body: dict[str, Any]) -> None:
        log.append("handler")
        raise ValueError("boom")

    async with TestPulsarBroker(broker, redelivery_limit=0) as br:
        with pytest.raises(ValueError, match="boom"):
            await br.publish({"a": 1}, "t")

    assert log == [
        "outer:enter",
        "inner:enter",
        "outer:consume",
        "inner:consume",
        "handler",
        "inner:exit:ValueError",
        "outer:exit:ValueError",
    ]


async def test_a_middleware_that_suppresses_hides_the_error_from_the_outer_ones() -> None:
    log: list[str] = []
    broker = PulsarBroker(middlewares=[recording("outer", log), recording("inner", log, suppress=True)])

    @broker.subscriber("t", subscription="s")
    async def fails(body: dict[str, Any]) -> None:
        raise ValueError("boom")

    async with TestPulsarBroker(broker) as br:
        await br.publish({"a": 1}, "t")  # suppressed: nothing raised, and the message is acked

    assert log[-2:] == ["inner:exit:ValueError", "outer:exit:None"]


async def test_context_is_set_while_handling_and_reset_after() -> None:
    broker = PulsarBroker()
    seen: dict[str, Any] = {}

    @broker.subscriber("t", subscription="s")
    async def handler(body: dict[str, Any]) -> None:
        context = broker.context
        seen.update(
            broker=context.get("broker"),
            message=context.get_local("message"),
            log_context=context.get_local("log_context"),
        )

    async with TestPulsarBroker(broker) as br:
        await br.publish({"a": 1}, "persistent://public/default/t")

    assert seen["broker"] is broker
    assert seen["message"] is not None
    assert seen["log_context"]["subscription"] == "s"
    assert broker.context.get_local("message") is None


async def test_no_suitable_handler_raises_subscriber_not_found() -> None:
    broker = PulsarBroker()
    sub = broker.subscriber("t", subscription="s")

    @sub(filter=lambda m: False)
    async def never(body: dict[str, Any]) -> None: ...

    async with TestPulsarBroker(broker):
        with pytest.raises(SubscriberNotFound):
            await sub.process_message(FakeMessage(b"{}", topic="t", properties={}))  # type: ignore[arg-type]


async def test_in_flight_lock_waits_for_handlers_up_to_the_timeout() -> None:
    lock = _InFlight()
    assert lock.empty
    with lock:
        assert lock.qsize == 1
        began = time.monotonic()
        await lock.wait_release(0.05)  # still held: gives up after the timeout
        assert time.monotonic() - began >= 0.04
    assert lock.empty
    await asyncio.wait_for(lock.wait_release(5), 1)  # free: returns at once
    await lock.wait_release(None)  # no timeout: never waits (FastStream's MultiLock semantics)


class FakeNativeProducer:
    def __init__(self, flush_seconds: float = 0.0) -> None:
        self.flushes: list[float] = []
        self.threads: set[int] = set()
        self.flush_seconds = flush_seconds

    def flush(self) -> None:
        self.threads.add(threading.get_ident())
        self.flushes.append(time.monotonic())
        time.sleep(self.flush_seconds)


async def test_flusher_flushes_once_per_delay_off_the_event_loop_thread() -> None:
    native = FakeNativeProducer()
    with ThreadPoolExecutor(max_workers=1) as pool:
        flusher = _BatchFlusher(native, 0.02, pool)
        began = time.monotonic()
        for _ in range(50):
            flusher.message_added()  # the timer is not pushed back by later messages
        await asyncio.sleep(0.1)
        flusher.stop()

    assert len(native.flushes) == 1
    assert 0.015 <= native.flushes[0] - began < 0.08
    assert threading.get_ident() not in native.threads


async def test_flusher_flushes_messages_added_during_a_slow_flush_right_after_it() -> None:
    native = FakeNativeProducer(flush_seconds=0.05)
    with ThreadPoolExecutor(max_workers=1) as pool:
        flusher = _BatchFlusher(native, 0.01, pool)
        flusher.message_added()
        await asyncio.sleep(0.02)  # the first flush is running now
        flusher.message_added()
        await asyncio.sleep(0.15)
        flusher.stop()

    assert len(native.flushes) == 2
    # The second waited for the first to return (50 ms), not for a fresh delay on top of it.
    assert 0.04 <= native.flushes[1] - native.flushes[0] < 0.08


@pytest.mark.parametrize(("logger", "logs"), [(None, False), (EMPTY, True)])
async def test_the_critical_log_middleware_is_left_out_only_when_logging_is_off(
    logger: Any, logs: bool
) -> None:
    broker = PulsarBroker(logger=logger)

    @broker.subscriber("t", subscription="s")
    async def handler(body: dict[str, Any]) -> None: ...

    broker._setup_logger()  # what start() does (TestPulsarBroker swaps in a mock logger instead)
    (sub,) = broker.subscribers
    stack = sub._middlewares_stack()  # type: ignore[attr-defined]

    assert any(isinstance(m, CriticalLogMiddleware) for m in stack) is logs
    assert any(isinstance(m, AcknowledgementFactory) for m in stack)  # FastStream's, mirrored


async def test_send_slots_are_taken_without_waiting_while_free_then_served_in_turn() -> None:
    slots = _Slots(2)
    assert slots.take()
    assert slots.take()
    assert not slots.take()
    order: list[str] = []

    async def waits(name: str) -> None:
        await slots.wait()
        order.append(name)

    first, second = asyncio.create_task(waits("first")), asyncio.create_task(waits("second"))
    await asyncio.sleep(0)
    slots.release()
    slots.release()
    await asyncio.gather(first, second)
    assert order == ["first", "second"]
    assert not slots.take()  # both slots went to the waiters
    slots.release()
    assert slots.take()


async def test_a_cancelled_wait_for_a_send_slot_neither_keeps_nor_loses_it() -> None:
    slots = _Slots(1)
    assert slots.take()
    gone = asyncio.create_task(slots.wait())
    await asyncio.sleep(0)
    gone.cancel()  # cancelled while waiting: no slot taken
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert not slots.take()  # the one slot is still out

    handed = asyncio.create_task(slots.wait())
    await asyncio.sleep(0)
    slots.release()  # handed to the waiter ...
    handed.cancel()  # ... which is cancelled before it runs: the slot is passed on, not lost
    with pytest.raises(asyncio.CancelledError):
        await handed
    assert slots.take()
    assert not slots.take()
