"""tuya-sim in the service template: bootstrap picks the sink, the service object starts and stops the
simulator, and the Pulsar sink publishes through the shared broker (in memory here)."""

from __future__ import annotations

from typing import Annotated, Any

import pytest
from faststream import Context

from fleet_shared.pulsar import PulsarBroker, PulsarMessage, TestPulsarBroker
from fleet_shared.tuya.codec import PushCodec
from fleet_tuya_sim.adapters.sinks import MemorySink, PulsarSink
from fleet_tuya_sim.bootstrap import bootstrap, topic_for

from .conftest import ACCESS_ID, ACCESS_SECRET, FakeClock, settings

pytestmark = pytest.mark.unit


def test_without_a_broker_url_messages_stay_in_memory() -> None:
    # explicitly none: the test stack's FLEET_PULSAR_URL is in the environment under `just test`
    service = bootstrap(settings(pulsar_url=""))
    assert service.broker is None
    assert isinstance(service.simulator.sink, MemorySink)


def test_with_a_broker_url_the_sink_is_tuyas_topic_on_the_shared_broker() -> None:
    service = bootstrap(settings(pulsar_url="pulsar://127.0.0.1:1", batching_max_delay_ms=3))
    sink = service.simulator.sink
    assert isinstance(sink, PulsarSink)
    assert sink.broker is service.broker
    assert sink.topic == f"persistent://{ACCESS_ID}/out/event"
    assert sink.topic == topic_for(service.settings)
    assert service.broker.pulsar_producer.default_options.batching_max_publish_delay_ms == 3


async def test_start_installs_the_fleet_and_stop_flushes_and_stops_the_publisher() -> None:
    sink = MemorySink()
    service = bootstrap(settings(), sink=sink, clock=FakeClock())
    assert not await service.fleet_ready()
    await service.start()
    assert await service.fleet_ready()
    assert await service.publisher_ready()
    assert not await service.bus_ready()  # no broker to be ready
    tids = service.simulator.report(count=3)
    await service.stop()
    assert [m.properties["tid"] for m in sink.sent] == tids  # confirmed before stop returned
    assert not await service.publisher_ready()


async def test_the_pulsar_sink_sends_tuyas_bytes_keyed_by_device_with_their_properties() -> None:
    broker = PulsarBroker()
    topic = f"persistent://{ACCESS_ID}/out/event"
    got: list[tuple[bytes, str | None, dict[str, str]]] = []

    @broker.subscriber(topic, subscription="ingest")
    async def on_push(body: dict[str, Any], message: Annotated[PulsarMessage, Context("message")]) -> None:
        got.append((message.body, message.raw_message.partition_key(), dict(message.headers)))

    encoded = PushCodec(ACCESS_SECRET).encode({"devId": "d1", "status": []}, protocol=4, t=1)
    async with TestPulsarBroker(broker):
        message_id = await PulsarSink(broker, topic).send(
            "d1", encoded.payload(), {**encoded.properties, "tid": "t-1"}
        )

    assert message_id
    [(body, key, headers)] = got
    assert body == encoded.payload()
    assert key == "d1"
    assert headers["tid"] == "t-1"
    assert headers["em"] == encoded.properties["em"]
    assert "content-type" not in headers  # bytes go out as they are, like Tuya's


def test_settings_are_the_kits_with_the_names_the_stack_gives(monkeypatch: pytest.MonkeyPatch) -> None:
    from fleet_shared.service import ServiceSettings
    from fleet_tuya_sim.settings import SimSettings

    for name in ("FLEET_SIM_HOST", "FLEET_SIM_PORT", "FLEET_SIM_LOG_LEVEL", "FLEET_PULSAR_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FLEET_HTTP_HOST", "127.0.0.2")
    monkeypatch.setenv("FLEET_HTTP_PORT", "9123")
    monkeypatch.setenv("FLEET_LOG_LEVEL", "WARNING")
    stack_named = SimSettings()
    assert isinstance(stack_named, ServiceSettings)
    assert (stack_named.http_host, stack_named.http_port, stack_named.log_level) == (
        "127.0.0.2",
        9123,
        "WARNING",
    )
    assert stack_named.pulsar_url == ""  # no broker: push messages in memory
    # the simulator's own names win (tests and older scripts set FLEET_SIM_PORT)
    monkeypatch.setenv("FLEET_SIM_PORT", "9456")
    monkeypatch.setenv("FLEET_SIM_LOG_LEVEL", "DEBUG")
    own = SimSettings()
    assert (own.http_port, own.log_level) == (9456, "DEBUG")


def test_the_app_is_built_by_the_service_kit() -> None:
    from fastapi.testclient import TestClient
    from prometheus_client import CollectorRegistry

    from fleet_tuya_sim.entrypoints.app import create_app

    registry = CollectorRegistry()
    with TestClient(create_app(bootstrap(settings(), sink=MemorySink()), registry=registry)) as client:
        answer = client.get("/v1.0/no-such-route")
        assert answer.json()["code"] == 1108  # Tuya's envelope on Tuya's paths, not problem+json
        assert answer.headers["x-request-id"]
        assert client.get("/readyz").json() == {"ready": True, "checks": {"fleet": True, "publisher": True}}
    requests = registry.get_sample_value(
        "fleet_http_requests_total",
        {"service": "tuya-sim", "method": "GET", "route": "/{path:path}", "status": "200"},
    )
    assert requests == 1
