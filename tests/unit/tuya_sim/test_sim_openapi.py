"""The OpenAPI subset through FastAPI's TestClient, signed with fleet_shared.tuya.signing: signature,
time, token and rate checks with Tuya's codes, and the device, pairing, removal and OTA endpoints."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
from fastapi.testclient import TestClient

from fleet_shared.tuya.models import (
    DeviceDetails,
    DeviceFunctions,
    DeviceLogPage,
    DeviceSpecification,
    FirmwareInfo,
    PairingResult,
    PairingToken,
    ThingDetails,
    TokenInfo,
    UpgradeProgress,
)
from fleet_shared.tuya.openapi import TuyaOpenApiClient
from fleet_tuya_sim.adapters.sinks import MemorySink
from fleet_tuya_sim.bootstrap import TuyaSim, bootstrap
from fleet_tuya_sim.domain.binding import BindingMode
from fleet_tuya_sim.domain.fleet import FleetSpec
from fleet_tuya_sim.entrypoints.app import create_app

from .conftest import ACCESS_ID, ACCESS_SECRET, OTHER_ID, OTHER_SECRET, Api, FakeClock, settings

pytestmark = pytest.mark.unit


def _error(envelope: dict[str, Any], code: int) -> None:
    assert envelope["success"] is False, envelope
    assert envelope["code"] == code, envelope
    assert isinstance(envelope["msg"], str)
    assert isinstance(envelope["t"], int)
    assert envelope["tid"]


def _bound(client: TestClient) -> list[str]:
    ids: list[str] = client.get("/sim/fleet").json()["bound_device_ids"]
    return ids


def test_operational_endpoints(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"ready": True, "checks": {"fleet": True, "publisher": True}}
    assert client.get("/metrics").status_code == 200


# -- gate ------------------------------------------------------------------------------------------------


def test_token_and_device_in_tuyas_envelope(api: Api, client: TestClient) -> None:
    device_id = _bound(client)[0]
    envelope = api.call("GET", f"/v1.0/devices/{device_id}")
    assert envelope["success"] is True
    assert set(envelope) == {"success", "result", "t", "tid"}
    details = DeviceDetails.model_validate(envelope["result"])
    truth = client.get(f"/sim/truth/devices/{device_id}").json()
    assert (details.id, details.uid, details.owner_id, details.online) == (
        device_id,
        truth["uid"],
        truth["home_id"],
        truth["online"],
    )
    assert {s.code: s.value for s in details.status} == {c: v["value"] for c, v in truth["dps"].items()}


def test_bad_signature_is_1004(api: Api, client: TestClient) -> None:
    device_id = _bound(client)[0]
    _error(api.call("GET", f"/v1.0/devices/{device_id}", secret="x" * 32), 1004)
    # a signature over another path does not carry over
    envelope = api.call("GET", "/v1.0/devices/other")
    _error(envelope, 2010)


def test_tampered_query_or_body_breaks_the_signature(api: Api, client: TestClient, clock: FakeClock) -> None:
    from fleet_shared.tuya.signing import sign_request

    ids = _bound(client)[:2]
    signed = sign_request(
        client_id=ACCESS_ID,
        secret=ACCESS_SECRET,
        t=int(clock() * 1000),
        method="GET",
        path="/v2.0/cloud/thing/batch",
        query={"device_ids": ids[0]},
        access_token=api.token,
    )
    response = client.get(
        "/v2.0/cloud/thing/batch", params={"device_ids": ",".join(ids)}, headers=signed.headers()
    )
    _error(response.json(), 1004)


def test_unknown_client_id_is_1005(api: Api) -> None:
    api.access_id = "nobody00000000000000"
    _error(api.call("GET", "/v1.0/token", {"grant_type": 1}, token=""), 1005)


def test_stale_request_time_is_1013(api: Api, clock: FakeClock) -> None:
    stale = int(clock() * 1000) - 301_000
    _error(api.call("GET", "/v1.0/token", {"grant_type": 1}, token="", t_ms=stale), 1013)
    ahead = int(clock() * 1000) + 301_000
    _error(api.call("GET", "/v1.0/token", {"grant_type": 1}, token="", t_ms=ahead), 1013)
    assert api.call("GET", "/v1.0/token", {"grant_type": 1}, token="", t_ms=stale + 2000)["success"]


def test_grant_type_must_be_1(api: Api) -> None:
    _error(api.call("GET", "/v1.0/token", {"grant_type": 2}, token=""), 1003)


def test_unknown_token_is_1011_missing_token_1002_and_expired_token_is_1010(
    api: Api, client: TestClient, clock: FakeClock
) -> None:
    device_id = _bound(client)[0]
    unknown = api.call("GET", f"/v1.0/devices/{device_id}", token="not-a-token")
    _error(unknown, 1011)
    missing = api.call("GET", f"/v1.0/devices/{device_id}", token="")
    _error(missing, 1002)
    assert missing["msg"] == "access_token is null"
    clock.advance(7200)
    expired = api.call("GET", f"/v1.0/devices/{device_id}")
    _error(expired, 1010)
    # the SDKs renew on this wording (tinytuya searches the answer for "token invalid")
    assert "token invalid" in expired["msg"]
    assert "token invalid" in unknown["msg"]


def test_token_lifetime_is_configurable(clock: FakeClock) -> None:
    service = bootstrap(settings(token_lifetime_s=60), sink=MemorySink(), clock=clock)
    with TestClient(create_app(service)) as client:
        api = Api(client, clock)
        info = TokenInfo.model_validate(api.connect()["result"])
        assert info.expire_time == 60
        device_id = _bound(client)[0]
        clock.advance(59)
        assert api.call("GET", f"/v1.0/devices/{device_id}")["success"]
        clock.advance(1)
        _error(api.call("GET", f"/v1.0/devices/{device_id}"), 1010)


def test_refresh_token_is_single_use_and_replaces_the_pair(api: Api, client: TestClient) -> None:
    device_id = _bound(client)[0]
    old_access, old_refresh = api.token, api.last_refresh
    refreshed = api.call("GET", f"/v1.0/token/{old_refresh}", token="")
    assert refreshed["success"], refreshed
    new = TokenInfo.model_validate(refreshed["result"])
    assert new.access_token.get_secret_value() != old_access
    _error(api.call("GET", f"/v1.0/token/{old_refresh}", token=""), 1011)
    _error(api.call("GET", f"/v1.0/devices/{device_id}", token=old_access), 1011)
    assert api.call("GET", f"/v1.0/devices/{device_id}", token=new.access_token.get_secret_value())["success"]


def test_control_api_can_expire_every_token(api: Api, client: TestClient) -> None:
    device_id = _bound(client)[0]
    assert client.post("/sim/tokens/expire").json()["expired"] >= 1
    _error(api.call("GET", f"/v1.0/devices/{device_id}"), 1010)


def test_another_project_has_no_rights_on_the_fleet(client: TestClient, clock: FakeClock) -> None:
    other = Api(client, clock, access_id=OTHER_ID, secret=OTHER_SECRET)
    other.connect()
    _error(other.call("GET", f"/v1.0/devices/{_bound(client)[0]}"), 1106)


def test_per_project_rate_limit_is_1199(clock: FakeClock) -> None:
    service = bootstrap(settings(rate_limit_rps=5, rate_limit_burst=5), sink=MemorySink(), clock=clock)
    with TestClient(create_app(service)) as client:
        api = Api(client, clock)
        api.connect()
        device_id = _bound(client)[0]
        codes = [api.call("GET", f"/v1.0/devices/{device_id}").get("code") for _ in range(8)]
        assert codes[:4] == [None] * 4
        assert codes[-1] == 1199
        clock.advance(1)
        assert api.call("GET", f"/v1.0/devices/{device_id}")["success"]


def test_unknown_device_is_2010_and_unknown_path_is_1108(api: Api) -> None:
    _error(api.call("GET", "/v1.0/devices/bf0000000000000000dead"), 2010)
    _error(api.call("GET", "/v2.0/cloud/thing/bf0000000000000000dead"), 2010)
    _error(api.call("GET", "/v9.9/nothing/here"), 1108)


# -- device endpoints ------------------------------------------------------------------------------------


def test_thing_batch_status_and_specifications(api: Api, client: TestClient) -> None:
    ids = _bound(client)[:4]
    thing = ThingDetails.model_validate(api.call("GET", f"/v2.0/cloud/thing/{ids[0]}")["result"])
    assert thing.id == ids[0]
    batch = api.call("GET", "/v2.0/cloud/thing/batch", {"device_ids": ",".join(ids)})["result"]
    assert [ThingDetails.model_validate(t).id for t in batch] == ids
    statuses = api.call("GET", "/v1.0/iot-03/devices/status", {"device_ids": ",".join(ids)})["result"]
    assert [s["id"] for s in statuses] == ids
    status = api.call("GET", f"/v1.0/devices/{ids[0]}/status")["result"]
    assert status == statuses[0]["status"]
    _error(api.call("GET", "/v2.0/cloud/thing/batch", {"device_ids": ",".join(ids * 6)}), 1101)

    v10 = api.call("GET", f"/v1.0/devices/{ids[0]}/specifications")["result"]
    v11 = DeviceSpecification.model_validate(
        api.call("GET", f"/v1.1/devices/{ids[0]}/specifications")["result"]
    )
    assert all(isinstance(entry["values"], str) for entry in v10["status"])
    assert "dp_id" not in v10["status"][0]
    assert all(spec.dp_id is not None and spec.type is not None for spec in v11.status)
    functions = DeviceFunctions.model_validate(api.call("GET", f"/v1.0/devices/{ids[0]}/functions")["result"])
    assert {f.code for f in functions.functions} <= {s.code for s in v11.status}


def test_logs_by_type(api: Api, client: TestClient, clock: FakeClock) -> None:
    device_id = _bound(client)[0]
    client.post(f"/sim/devices/{device_id}/offline")
    clock.advance(1)
    client.post(f"/sim/devices/{device_id}/online")
    clock.advance(1)
    client.post("/sim/reports", json={"device_ids": [device_id]})
    now = int(clock() * 1000)
    query = {"type": "1,2,7", "start_time": now - 60_000, "end_time": now}
    page = DeviceLogPage.model_validate(api.call("GET", f"/v1.0/devices/{device_id}/logs", query)["result"])
    kinds = [entry.event_id for entry in page.logs]
    assert kinds[-2:] == [1, 2]  # newest first: ... online, offline
    assert kinds[0] == 7
    only_online = api.call("GET", f"/v1.0/devices/{device_id}/logs", {**query, "type": "1"})["result"]["logs"]
    assert [entry["event_id"] for entry in only_online] == [1]


# -- pairing ---------------------------------------------------------------------------------------------


def test_pairing_through_the_openapi(clock: FakeClock) -> None:
    service = bootstrap(settings(unbound=2), sink=MemorySink(), clock=clock)
    with TestClient(create_app(service)) as client:
        api = Api(client, clock)
        api.connect()
        fleet = client.get("/sim/fleet").json()
        home = fleet["homes"][0]
        body = orjson.dumps({"paring_type": "EZ", "uid": home["owner_uid"], "time_zone_id": "Europe/Berlin"})
        envelope = api.call("POST", "/v1.0/device/paring/token", body=body)
        token = PairingToken.model_validate(envelope["result"])
        assert token.expire_time == 600
        assert len(token.assembled_token()) == 14
        device_id = fleet["unbound_device_ids"][0]
        outcome = client.post(
            "/sim/pairing/activate", json={"token": token.assembled_token(), "device_ids": [device_id]}
        ).json()
        assert outcome[0]["ok"] is True
        result = PairingResult.model_validate(
            api.call("GET", f"/v1.0/device/paring/tokens/{token.token}")["result"]
        )
        assert [d.device_id for d in result.success] == [device_id]
        details = api.call("GET", f"/v1.0/devices/{device_id}")["result"]
        assert (details["uid"], details["owner_id"]) == (home["owner_uid"], home["home_id"])
        # the token is spent: a second device fails with its code in the token result
        second = fleet["unbound_device_ids"][1]
        client.post("/sim/pairing/activate", json={"token": token.assembled_token(), "device_ids": [second]})
        failed = api.call("GET", f"/v1.0/device/paring/tokens/{token.token}")["result"]["failed"]
        assert failed == [
            {"device_id": second, "name": failed[0]["name"], "code": "1012", "msg": failed[0]["msg"]}
        ]
        _error(api.call("POST", "/v1.0/device/paring/token", body=orjson.dumps({"uid": "x"})), 1100)


def test_strong_bound_pairing_fails_in_the_token_result(clock: FakeClock) -> None:
    service = bootstrap(settings(), sink=MemorySink(), clock=clock)
    with TestClient(create_app(service)) as client:
        client.post(
            "/sim/fleet", json={"seed": 3, "devices": 4, "homes": 2, "binding_mode": BindingMode.STRONG}
        )
        fleet = client.get("/sim/fleet").json()
        truth = client.get("/sim/truth", params={"messages": "false"}).json()["fleet"]["devices"]
        device_id = fleet["bound_device_ids"][0]
        other = next(h for h in fleet["homes"] if h["owner_uid"] != truth[device_id]["uid"])
        token = client.post("/sim/pairing/tokens", json={"uid": other["owner_uid"]}).json()
        outcome = client.post(
            "/sim/pairing/activate", json={"token": token["assembled_token"], "device_ids": [device_id]}
        ).json()
        assert (outcome[0]["ok"], outcome[0]["code"]) == (False, "113")


# -- removal and OTA -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "template", "reset"),
    [
        ("DELETE", "/v1.0/devices/{}", False),
        ("DELETE", "/v2.0/cloud/thing/{}", False),
        ("PUT", "/v1.0/devices/{}/reset-factory", True),
        ("POST", "/v2.0/cloud/thing/{}/reset", True),
    ],
)
def test_removal_endpoints(
    api: Api, client: TestClient, sink: MemorySink, method: str, template: str, reset: bool
) -> None:
    device_id = _bound(client)[0]
    envelope = api.call(method, template.format(device_id))
    assert envelope == {**envelope, "success": True, "result": True}
    _error(api.call("GET", f"/v1.0/devices/{device_id}"), 2010)
    _error(api.call(method, template.format(device_id)), 2010)
    assert client.post("/sim/flush").json()["flushed"]
    messages = client.get("/sim/truth").json()["messages"]
    kinds = [m["kind"] for m in messages if m["key"] == device_id]
    assert kinds[-1] == "delete"
    truth = client.get(f"/sim/truth/devices/{device_id}").json()
    assert truth["bound"] is False
    assert len(sink.sent) == len(messages)


def test_ota_through_the_openapi(api: Api, client: TestClient, clock: FakeClock) -> None:
    fleet = client.get("/sim/fleet").json()
    truth = client.get("/sim/truth", params={"messages": "false"}).json()["fleet"]["devices"]
    device_id = next(d for d in fleet["bound_device_ids"] if truth[d]["online"] and not truth[d]["low_power"])
    product_id = truth[device_id]["product_id"]
    client.post("/sim/firmware", json={"product_id": product_id, "channel": 0, "version": "9.9.9"})
    client.post("/sim/ota/plan", json={"device_id": device_id, "channel": 0, "outcome": "success"})
    firmware = [
        FirmwareInfo.model_validate(f)
        for f in api.call("GET", f"/v2.0/cloud/thing/{device_id}/firmware")["result"]
    ]
    module = next(f for f in firmware if f.channel == 0)
    assert (module.upgrade_status, module.version, module.can_upgrade) == (1, "9.9.9", True)
    assert api.call("POST", f"/v2.0/cloud/thing/{device_id}/firmware/0")["result"] is True
    progress = UpgradeProgress.model_validate(
        api.call("GET", f"/v2.0/cloud/thing/{device_id}/firmware/0/progress")["result"]
    )
    assert (progress.upgrade_status, progress.progress) == (2, 0)
    clock.advance(10)
    client.post("/sim/ota/advance")
    progress = UpgradeProgress.model_validate(
        api.call("GET", f"/v2.0/cloud/thing/{device_id}/firmware/0/progress")["result"]
    )
    assert (progress.upgrade_status, progress.progress) == (3, 100)
    assert client.get(f"/sim/truth/devices/{device_id}").json()["firmware"]["0"] == "9.9.9"
    client.post("/sim/flush")
    statuses = [
        m["data"]["bizData"]["upgradeStatus"]
        for m in client.get("/sim/truth").json()["messages"]
        if m["kind"] == "upgradeStatus" and m["key"] == device_id
    ]
    assert statuses[0] == 2
    assert statuses[-1] == 3
    # an offline (not low-power) device cannot start an upgrade
    client.post("/sim/firmware", json={"product_id": product_id, "channel": 0, "version": "10.0.0"})
    client.post(f"/sim/devices/{device_id}/offline")
    _error(api.call("POST", f"/v2.0/cloud/thing/{device_id}/firmware/0"), 2001)


# -- the project's own client ----------------------------------------------------------------------------


async def test_fleet_shared_openapi_client_works_against_the_sim(clock: FakeClock) -> None:
    service: TuyaSim = bootstrap(settings(), sink=MemorySink(), clock=clock)
    service.simulator.install_fleet(FleetSpec(seed=7, devices=20, homes=4))
    transport = httpx.ASGITransport(app=create_app(service))
    async with (
        httpx.AsyncClient(transport=transport) as http,
        TuyaOpenApiClient(ACCESS_ID, ACCESS_SECRET, base_url="http://sim", http=http, clock=clock) as tuya,
    ):
        device_id = next(d.device_id for d in service.simulator.fleet.devices.values() if d.bound)
        details = await tuya.get_device(device_id)
        assert details.id == device_id
        things = await tuya.get_things([device_id])
        assert things[0].id == device_id
        spec = await tuya.get_specifications(device_id, version="v1.1")
        assert spec.status
        assert await tuya.get_devices_status([device_id])


def test_control_api_replays_earlier_messages(client: TestClient, service: TuyaSim) -> None:
    reported = client.post("/sim/reports", json={"count": 4}).json()["tids"]
    assert client.post("/sim/chaos/replay", json={"count": 0}).status_code == 422
    response = client.post("/sim/chaos/replay", json={"count": 2, "up_to_seq": 2})
    assert response.status_code == 200
    tids = response.json()["tids"]
    assert len(tids) == 2
    assert set(tids) <= set(reported)
    assert service.simulator.truth.summary()["replayed"] == 2
