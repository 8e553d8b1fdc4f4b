"""The clients every domain service opens the same way, the close-out every service's `stop()` ends with
(each client closed in order, whatever the earlier ones did), the end of consuming a drain starts with, and
the publishers a service declares from the topic registry."""

from __future__ import annotations

import asyncio
import logging
from typing import cast

import pytest

from fleet_contracts import topics
from fleet_shared.pulsar import PulsarBroker
from fleet_shared.service import ServiceSettings
from fleet_shared.service.clients import close_all, declare_publishers, service_clients, stop_subscribers

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


class Subscriber:
    def __init__(self, name: str, stopped: list[str], fails: bool = False) -> None:
        self.name, self.stopped, self.fails = name, stopped, fails

    async def stop(self) -> None:
        if self.fails:
            raise RuntimeError("consumer already closed")
        self.stopped.append(self.name)


class Broker:
    def __init__(self, *subscribers: Subscriber) -> None:
        self.subscribers = list(subscribers)
        self.stopped = False

    async def stop(self) -> None:
        self.stopped = True


async def test_consuming_stops_on_every_subscriber_even_when_one_fails_and_the_broker_stays_up() -> None:
    stopped: list[str] = []
    broker = Broker(Subscriber("a", stopped), Subscriber("b", stopped, fails=True), Subscriber("c", stopped))
    await stop_subscribers(cast(PulsarBroker, broker))
    assert stopped == ["a", "c"]
    assert not broker.stopped  # producers still publish what the drain relays


def test_a_service_opens_the_broker_and_its_database_named_after_it() -> None:
    settings = ServiceSettings(pulsar_url="pulsar://bus:6650", mongodb_uri="mongodb://db.example:27017/")
    broker, client, db = service_clients(settings, "ota", "ota_blue")
    try:
        assert isinstance(broker, PulsarBroker)
        assert broker.config.logger.log_level == logging.DEBUG  # per-message lines only when debugging
        assert db.name == "ota_blue"
        assert db.client is client
        assert client.delegate.options.pool_options.metadata["application"] == {"name": "fleet-ota"}
    finally:
        client.close()
    loud, quiet_client, _ = service_clients(settings, "ingest", "ingest", log_level=logging.INFO)
    quiet_client.close()
    assert loud.config.logger.log_level == logging.INFO
