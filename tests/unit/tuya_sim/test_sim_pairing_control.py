"""tuya-sim's pairing controls: BLE tokens bound to one uuid, forced failures with Tuya's codes, custom
provisioning (SSID, password, token; or a camera's QR payload) against the site's Wi-Fi, delayed activations,
and the token result as the ground truth."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from fleet_tuya_sim.adapters.sinks import MemorySink
from fleet_tuya_sim.bootstrap import bootstrap
from fleet_tuya_sim.domain.provisioning import BadProvisioning, Site, parse_qr_payload
from fleet_tuya_sim.entrypoints.app import create_app

from .conftest import Api, FakeClock, settings

pytestmark = pytest.mark.unit

PASSWORD = 'pä"ss\\word 1'


def _token(
    api: Api, home: dict[str, Any], paring_type: str = "EZ", uuid: str | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"paring_type": paring_type, "uid": home["owner_uid"], "time_zone_id": "UTC"}
    if uuid:
        body["extension"] = {"uuid": uuid}
    result: dict[str, Any] = api.call("POST", "/v1.0/device/paring/token", body=orjson.dumps(body))["result"]
    result["assembled"] = result["region"] + result["token"] + result["secret"]
    return result


def _result(api: Api, token: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = api.call("GET", f"/v1.0/device/paring/tokens/{token['token']}")["result"]
    return result


@pytest.fixture
def rig(clock: FakeClock) -> Any:
    service = bootstrap(settings(unbound=6, pairing_ez_max_devices=5), sink=MemorySink(), clock=clock)
    with TestClient(create_app(service)) as client:
        api = Api(client, clock)
        api.connect()
        yield client, api, client.get("/sim/fleet").json()


def test_a_ble_token_pairs_only_the_device_of_its_uuid(rig: Any) -> None:
    client, api, fleet = rig
    truth = client.get("/sim/truth", params={"messages": "false"}).json()["fleet"]["devices"]
    mine, other = fleet["unbound_device_ids"][:2]
    token = _token(api, fleet["homes"][0], "BLE", truth[mine]["uuid"])
    client.post("/sim/pairing/activate", json={"token": token["assembled"], "device_ids": [other]})
    client.post("/sim/pairing/activate", json={"token": token["assembled"], "device_ids": [mine]})
    result = _result(api, token)
    assert [d["device_id"] for d in result["success"]] == [mine]
    assert [(f["device_id"], f["code"]) for f in result["failed"]] == [(other, "122")]


def test_a_forced_failure_carries_tuyas_code(rig: Any) -> None:
    client, api, fleet = rig
    token = _token(api, fleet["homes"][0])
    device = fleet["unbound_device_ids"][0]
    answer = client.post(
        "/sim/pairing/fail",
        json={"token": token["assembled"], "device_ids": [device], "code": 106, "msg": "timeout"},
    ).json()
    assert answer["outcomes"][0]["code"] == "106"
    [failed] = _result(api, token)["failed"]
    assert (failed["device_id"], failed["code"], failed["msg"]) == (device, "106", "timeout")
    refused = client.post(
        "/sim/pairing/fail", json={"token": token["assembled"], "device_ids": [device], "code": 0}
    )
    assert refused.status_code == 422


def test_provisioning_joins_the_site_wifi_or_fails_with_code_2_or_3(rig: Any) -> None:
    client, api, fleet = rig
    token = _token(api, fleet["homes"][0])
    a, b, c = fleet["unbound_device_ids"][:3]
    assert client.put("/sim/pairing/networks", json={"networks": {"site": PASSWORD}}).status_code == 200
    wrong = {"ssid": "site", "password": "nope-nope", "token": token["assembled"], "device_ids": [a]}
    assert client.post("/sim/pairing/provision", json=wrong).json()["outcomes"][0]["code"] == "3"
    unknown = {**wrong, "ssid": "elsewhere", "device_ids": [b]}
    assert client.post("/sim/pairing/provision", json=unknown).json()["outcomes"][0]["code"] == "2"
    payload = orjson.dumps({"s": "site", "p": PASSWORD, "t": token["assembled"]}).decode()
    scanned = client.post("/sim/pairing/provision", json={"qr_payload": payload, "device_ids": [c]}).json()
    assert scanned["outcomes"][0]["ok"] is True
    result = _result(api, token)
    assert [d["device_id"] for d in result["success"]] == [c]
    assert sorted((f["device_id"], f["code"]) for f in result["failed"]) == sorted([(a, "3"), (b, "2")])
    truth = client.get("/sim/truth").text
    assert PASSWORD not in truth
    assert "nope-nope" not in truth
    bad = client.post("/sim/pairing/provision", json={"qr_payload": "{}", "device_ids": [c]})
    assert bad.status_code == 422
    both = client.post("/sim/pairing/provision", json={**wrong, "qr_payload": payload})
    assert both.status_code == 422


def test_a_delayed_activation_happens_later_and_an_unknown_token_is_refused_at_once(clock: FakeClock) -> None:
    service = bootstrap(settings(unbound=2), sink=MemorySink())  # real time: the delay is a real sleep
    with TestClient(create_app(service)) as client:
        api = Api(client, FakeClock(time.time()))
        api.connect()
        fleet = client.get("/sim/fleet").json()
        token = _token(api, fleet["homes"][0])
        device = fleet["unbound_device_ids"][0]
        answer = client.post(
            "/sim/pairing/activate-later",
            json={"token": token["assembled"], "device_ids": [device], "delay_s": 0.2},
        ).json()
        assert answer == {"scheduled": True, "outcomes": []}
        assert _result(api, token)["success"] == []
        deadline = time.monotonic() + 5
        while client.get("/sim/pairing/pending").json()["pending"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [d["device_id"] for d in _result(api, token)["success"]] == [device]
        unknown = client.post(
            "/sim/pairing/activate-later",
            json={"token": "EUnotatokenXYZ", "device_ids": [device], "delay_s": 1},
        )
        assert unknown.status_code >= 400


def test_qr_payload_parsing_and_an_open_site() -> None:
    creds = parse_qr_payload(orjson.dumps({"s": 'Café "x"', "p": PASSWORD, "t": "EUabcdefghWXYZ"}).decode())
    assert (creds.ssid, creds.password) == ('Café "x"', PASSWORD)
    assert PASSWORD not in repr(creds)
    with pytest.raises(BadProvisioning):
        parse_qr_payload('{"s": "x", "p": 1, "t": "y"}')
    assert Site().join("any", "thing") is None
