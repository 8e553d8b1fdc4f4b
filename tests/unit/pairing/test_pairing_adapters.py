"""pairing's Tuya adapter against tuya-sim in process (real signing through the shared client), and the
binding modes read from configuration."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from fleet_contracts import topics
from fleet_contracts.pairing import PairingMode, PairingSessionEnded, PairingSessionState, PairingTokenExpired
from fleet_pairing.adapters.events import EventEncoder, OutboxEntry
from fleet_pairing.adapters.outbox import PulsarEventPublisher
from fleet_pairing.adapters.system import ConfiguredBindingModes
from fleet_pairing.adapters.tuya import TuyaPairingApi
from fleet_pairing.domain.causes import FailureCause, failure_for
from fleet_pairing.domain.credentials import ble_token
from fleet_pairing.domain.session import BindingMode
from fleet_shared.tuya.openapi import TuyaOpenApiClient
from fleet_tuya_sim.adapters.sinks import MemorySink
from fleet_tuya_sim.bootstrap import bootstrap
from fleet_tuya_sim.domain.fleet import FleetSpec
from fleet_tuya_sim.entrypoints.app import create_app
from fleet_tuya_sim.settings import SimSettings

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
ACCESS_ID = "pairingunitaccess001"
ACCESS_SECRET = "pairing0unit0test0secret00000000"


async def test_tokens_results_and_removal_through_the_shared_client() -> None:
    def clock() -> float:
        return T0.timestamp()

    sim = SimSettings(access_id=ACCESS_ID, access_secret=ACCESS_SECRET, rate_limit_rps=0)
    # the app's lifespan is not run (ASGITransport): the fleet is installed here instead of at start
    service = bootstrap(sim, sink=MemorySink(), clock=clock, create_fleet=False)
    service.simulator.install_fleet(FleetSpec(seed=7, devices=10, homes=2, unbound=3))
    transport = httpx.ASGITransport(app=create_app(service))
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://sim") as http,
        TuyaOpenApiClient(ACCESS_ID, ACCESS_SECRET, base_url="http://sim", http=http, clock=clock) as client,
    ):
        api = TuyaPairingApi(client)
        fleet = (await http.get("/sim/fleet")).json()
        home = fleet["homes"][0]
        new = await api.create_token(
            owner_uid=home["owner_uid"],
            home_id=home["home_id"],
            time_zone_id="Europe/Berlin",
            mode=PairingMode.QR,
            device_uuid=None,
        )
        assert new.lifetime is not None
        assert new.lifetime.total_seconds() == 600
        assembled = new.issued.assembled()
        assert len(assembled.get_secret_value()) == 14
        assert ble_token(assembled).get_secret_value() == new.issued.token
        assert new.issued.secret.get_secret_value() not in repr(new)

        first, second = fleet["unbound_device_ids"][:2]
        for device in (first, second):
            await http.post(
                "/sim/pairing/activate", json={"token": assembled.get_secret_value(), "device_ids": [device]}
            )
        result = await api.token_result(new.issued.token)
        assert [d.device_id for d in result.success] == [first]
        [failed] = result.failed
        assert failed.device_id == second
        assert failure_for(failed.code).cause is FailureCause.TOKEN_VOID  # the simulator's "already used"

        assert await api.remove_device(first) is True


def test_binding_modes_from_configuration() -> None:
    modes = ConfiguredBindingModes.parse(" p1:strong, p2:MEDIUM ,p3:weak,", default="weak")
    assert modes.binding_mode("p1") is BindingMode.STRONG
    assert modes.binding_mode("p2") is BindingMode.MEDIUM
    assert modes.binding_mode("other") is BindingMode.WEAK
    assert modes.binding_mode(None) is BindingMode.WEAK
    assert ConfiguredBindingModes.parse("").binding_mode("p1") is None


@pytest.mark.parametrize("text", ["p1", ":strong", "p1:loose"])
def test_bad_binding_mode_entries_are_named(text: str) -> None:
    with pytest.raises(ValueError, match="binding mode entry"):
        ConfiguredBindingModes.parse(text)


class RecordingBroker:
    """Stands in for `PulsarBroker.publish`: yields between sends, as a real send does."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, dict[str, str]]] = []

    async def publish(self, body: bytes, topic: str, *, key: str, headers: dict[str, str]) -> None:
        await asyncio.sleep(0.001 if key == "a" else 0)
        self.sent.append((key, body.decode(), headers))


async def test_the_publisher_keeps_each_keys_order() -> None:
    broker = RecordingBroker()
    entries = [OutboxEntry(f"id{i}", "t", key, f"{key}{i}".encode()) for i, key in enumerate("aabab")]
    await PulsarEventPublisher(broker).publish(entries)  # type: ignore[arg-type]
    assert [body for key, body, _ in broker.sent if key == "a"] == ["a0", "a1", "a3"]
    assert [body for key, body, _ in broker.sent if key == "b"] == ["b2", "b4"]
    assert {headers["event-id"] for _, _, headers in broker.sent} == {f"id{i}" for i in range(5)}


def test_event_ids_are_fixed_by_session_version_and_place() -> None:
    encoder = EventEncoder("tenant1", "eu")
    events = [
        PairingTokenExpired(token="tok1", home_id="h1", session_id="s1", paired_devices=0),
        PairingSessionEnded(
            token="tok1",
            home_id="h1",
            session_id="s1",
            state=PairingSessionState.EXPIRED,
            paired_devices=0,
            failed_devices=0,
            unexpected_devices=0,
        ),
    ]
    first = encoder.entries("s1", 3, events, T0)
    again = encoder.entries("s1", 3, events, T0 + timedelta(seconds=5))
    assert [e.id for e in first] == [e.id for e in again]
    assert len({e.id for e in first + encoder.entries("s1", 4, events, T0)}) == 4
    decoded = [topics.PAIRING_EVENTS.decode(e.body) for e in first]
    assert [d.type for d in decoded] == ["pairing.token.expired.v1", "pairing.session.ended.v1"]
    assert {(e.key, e.topic) for e in first} == {("tok1", topics.PAIRING_EVENTS.name)}
    assert all(
        (d.tenant, d.region, d.source, d.subject) == ("tenant1", "eu", "/fleet/pairing", "tok1")
        for d in decoded
    )
