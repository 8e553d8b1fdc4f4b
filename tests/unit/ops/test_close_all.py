"""The close-out every service's `stop()` ends with (each client closed in order, whatever the earlier ones
did), and the publishers a service declares from the topic registry."""

from __future__ import annotations

import asyncio
import logging

import pytest

from fleet_contracts import topics
from fleet_shared.pulsar import PulsarBroker
from fleet_shared.service.clients import close_all, declare_publishers

pytestmark = pytest.mark.unit


class Client:
    def __init__(self, name: str, closed: list[str], error: BaseException | None = None) -> None:
        self.name, self.closed, self.error = name, closed, error

    async def aclose(self) -> None:
        await asyncio.sleep(0)
        self.closed.append(self.name)
        if self.error is not None:
            raise self.error

    def close(self) -> None:  # a synchronous close, as MongoDB's client has
        self.closed.append(self.name)
        if self.error is not None:
            raise self.error


async def test_steps_run_in_order_sync_and_async_and_absent_clients_are_skipped() -> None:
    closed: list[str] = []
    broker, openapi, kit, mongo = (
        Client("broker", closed),
        None,
        Client("kit", closed),
        Client("mongo", closed),
    )
    # a close function (async or sync), or a client closed with its `aclose()`
    await close_all(broker.aclose, openapi, kit, mongo.close)
    assert closed == ["broker", "kit", "mongo"]


async def test_a_failing_step_does_not_stop_the_others_and_the_first_failure_is_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    closed: list[str] = []
    first, second = RuntimeError("broker stuck"), OSError("mongo gone")
    steps = [Client("broker", closed, first), Client("security", closed), Client("mongo", closed, second)]
    with (
        caplog.at_level(logging.WARNING, "fleet_shared.service.clients"),
        pytest.raises(RuntimeError) as raised,
    ):
        await close_all(steps[0].aclose, steps[1].aclose, steps[2].close)
    assert closed == ["broker", "security", "mongo"]
    assert raised.value is first
    # every failure is logged with its step, the second one too (only the first can be raised)
    logged = [(r.getMessage(), r.exc_info[1] if r.exc_info else None) for r in caplog.records]
    assert [error for _, error in logged] == [first, second]
    assert "Client.aclose" in logged[0][0]
    assert "Client.close" in logged[1][0]


async def test_cancellation_in_one_step_still_closes_the_rest_then_propagates() -> None:
    closed: list[str] = []
    broker, mongo = Client("broker", closed, asyncio.CancelledError()), Client("mongo", closed)
    with pytest.raises(asyncio.CancelledError):
        await close_all(broker.aclose, mongo.close)
    assert closed == ["broker", "mongo"]


async def test_nothing_to_close_is_fine() -> None:
    await close_all()
    await close_all(None, None)


def test_declared_publishers_come_from_the_topic_registry() -> None:
    broker = PulsarBroker()
    declare_publishers(broker, topics.OTA_FIRMWARE_EVENTS, topics.OTA_RELEASE_EVENTS)
    declared = {publisher.topic for publisher in broker.publishers}
    assert declared == {topics.OTA_FIRMWARE_EVENTS.name, topics.OTA_RELEASE_EVENTS.name}
