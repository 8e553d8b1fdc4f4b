"""What Tuya's own clients need from the simulated cloud (issue 16), through FastAPI's TestClient: both
signed-header layouts, commands that change DPs and cause a status push, the project device list, factory
infos, the IoT Core shadow, the app-user login and the refused MQTT hub."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from fleet_shared.tuya.codec import PushCodec
from fleet_tuya_sim.adapters.sinks import MemorySink
from fleet_tuya_sim.settings import DEV_APP_PASSWORD

from .conftest import ACCESS_ID, ACCESS_SECRET, OTHER_ID, OTHER_SECRET, Api, FakeClock

pytestmark = pytest.mark.unit


def _error(envelope: dict[str, Any], code: int) -> None:
    assert envelope["success"] is False, envelope
    assert envelope["code"] == code, envelope


def _truth(client: TestClient) -> dict[str, Any]:
    devices: dict[str, Any] = client.get("/sim/truth", params={"messages": "false"}).json()["fleet"][
        "devices"
    ]
    return devices


def _online_plug(client: TestClient) -> str:
    return next(
        d
        for d, t in _truth(client).items()
        if t["bound"] and t["online"] and t["product_id"] == "sim0plug0cz00001"
    )


def _tinytuya_style_post(
    client: TestClient, clock: FakeClock, token: str, path: str, body: dict[str, Any], *, joined: bool
) -> dict[str, Any]:
    """A POST signed with `Content-type` as a signed header, each line `\\n`-terminated (tinytuya) or
    `\\n`-joined (Tuya's Java connector). Written out here, not taken from the code under test."""
    raw = orjson.dumps(body)
    t = str(int(clock() * 1000))
    lines = "Content-type:application/json" + ("" if joined else "\n")
    string_to_sign = f"POST\n{hashlib.sha256(raw).hexdigest()}\n{lines}\n{path}"
    message = ACCESS_ID + token + t + string_to_sign
    sign = hmac.new(ACCESS_SECRET.encode(), message.encode(), hashlib.sha256).hexdigest().upper()
    headers = {
        "Content-type": "application/json",
        "Signature-Headers": "Content-type",
        "client_id": ACCESS_ID,
        "sign": sign,
        "t": t,
        "sign_method": "HMAC-SHA256",
        "access_token": token,
    }
    envelope: dict[str, Any] = client.post(path, content=raw, headers=headers).json()
    return envelope


@pytest.mark.parametrize("joined", [False, True], ids=["lines-terminated", "lines-joined"])
def test_both_signed_header_layouts_are_accepted(
    api: Api, client: TestClient, clock: FakeClock, joined: bool
) -> None:
    device_id = _online_plug(client)
    path = f"/v1.0/iot-03/devices/{device_id}/commands"
    body = {"commands": [{"code": "switch_1", "value": True}]}
    envelope = _tinytuya_style_post(client, clock, api.token, path, body, joined=joined)
    assert envelope["success"] is True, envelope
    # a valid signature in either layout does not make an unknown token valid
    _error(_tinytuya_style_post(client, clock, "not-a-token", path, body, joined=joined), 1011)


def test_a_signature_in_neither_layout_is_1004(api: Api, client: TestClient, clock: FakeClock) -> None:
    device_id = _online_plug(client)
    raw = orjson.dumps({"commands": [{"code": "switch_1", "value": True}]})
    t = str(int(clock() * 1000))
    headers = {
        "Content-type": "application/json",
        "Signature-Headers": "Content-type",
        "client_id": ACCESS_ID,
        "sign": "0" * 64,
        "t": t,
        "sign_method": "HMAC-SHA256",
        "access_token": api.token,
    }
    envelope = client.post(f"/v1.0/iot-03/devices/{device_id}/commands", content=raw, headers=headers).json()
    _error(envelope, 1004)


def test_a_command_changes_the_dp_and_the_device_reports_it(
    api: Api, client: TestClient, sink: MemorySink
) -> None:
    device_id = _online_plug(client)
    before = _truth(client)[device_id]["dps"]["switch_1"]["value"]
    body = orjson.dumps({"commands": [{"code": "switch_1", "value": not before}]})
    envelope = api.call("POST", f"/v1.0/iot-03/devices/{device_id}/commands", body=body)
    assert envelope["success"] is True, envelope
    assert envelope["result"] is True
    status = api.call("GET", f"/v1.0/iot-03/devices/{device_id}/status")["result"]
    assert {"code": "switch_1", "value": not before} in status
    assert client.post("/sim/flush").json()["flushed"]
    codec = PushCodec(ACCESS_SECRET)
    reports = [
        codec.decode(m.payload, m.properties).data
        for m in sink.sent
        if m.key == device_id and orjson.loads(m.payload)["protocol"] == 4
    ]
    assert reports, "no status push for the command"
    assert reports[-1]["status"][0]["code"] == "switch_1"
    assert reports[-1]["status"][0]["value"] is (not before)


def test_legacy_commands_route_and_refusals_change_nothing(api: Api, client: TestClient) -> None:
    device_id = _online_plug(client)
    path = f"/v1.0/devices/{device_id}/commands"
    ok = api.call("POST", path, body=orjson.dumps({"commands": [{"code": "countdown_1", "value": 60}]}))
    assert ok["success"] is True, ok
    before = _truth(client)[device_id]["dps"]
    # one bad command refuses the batch
    both = {"commands": [{"code": "switch_1", "value": True}, {"code": "cur_power", "value": 1}]}
    _error(api.call("POST", path, body=orjson.dumps(both)), 2008)
    _error(api.call("POST", path, body=orjson.dumps({"commands": [{"code": "switch_1", "value": 3}]})), 2008)
    _error(api.call("POST", path, body=orjson.dumps({"commands": []})), 1100)
    _error(api.call("POST", path, body=b"not json"), 1109)
    assert _truth(client)[device_id]["dps"] == before
    client.post(f"/sim/devices/{device_id}/offline")
    _error(
        api.call("POST", path, body=orjson.dumps({"commands": [{"code": "switch_1", "value": True}]})), 2001
    )


def test_iot03_functions_and_specification_match_the_legacy_views(api: Api, client: TestClient) -> None:
    device_id = _online_plug(client)
    functions = api.call("GET", f"/v1.0/iot-03/devices/{device_id}/functions")["result"]
    assert functions == api.call("GET", f"/v1.0/devices/{device_id}/functions")["result"]
    spec = api.call("GET", f"/v1.0/iot-03/devices/{device_id}/specification")["result"]
    assert spec == api.call("GET", f"/v1.0/devices/{device_id}/specifications")["result"]
    assert {f["code"] for f in spec["functions"]} == {"switch_1", "countdown_1", "relay_status"}


def test_project_device_list_pages_through_every_bound_device(api: Api, client: TestClient) -> None:
    bound = set(client.get("/sim/fleet").json()["bound_device_ids"])
    seen: list[str] = []
    query: dict[str, Any] = {"size": 7}
    while True:
        result = api.call("GET", "/v1.0/iot-01/associated-users/devices", query)["result"]
        assert result["total"] == len(bound)
        seen += [d["id"] for d in result["devices"]]
        if not result["has_more"]:
            break
        query["last_row_key"] = result["last_row_key"]
    assert sorted(seen) == sorted(bound)


def test_devices_of_one_user_under_iot03(api: Api, client: TestClient) -> None:
    truth = _truth(client)
    uid = next(t["uid"] for t in truth.values() if t["bound"])
    query = {"source_type": "tuyaUser", "source_id": uid, "page_size": 75}
    result = api.call("GET", "/v1.3/iot-03/devices", query)["result"]
    assert {d["id"] for d in result["list"]} == {d for d, t in truth.items() if t["uid"] == uid}
    assert all(d["uid"] == uid for d in result["list"])


def test_factory_infos_is_not_a_device_id(api: Api, client: TestClient) -> None:
    ids = client.get("/sim/fleet").json()["bound_device_ids"][:3]
    result = api.call("GET", "/v1.0/devices/factory-infos", {"device_ids": ",".join(ids)})["result"]
    assert [r["id"] for r in result] == ids
    assert all(len(r["mac"].split(":")) == 6 and r["uuid"] for r in result)
    _error(api.call("GET", "/v1.0/devices/factory-infos"), 1100)


def test_shadow_properties(api: Api, client: TestClient) -> None:
    device_id = _online_plug(client)
    truth = _truth(client)[device_id]["dps"]
    result = api.call("GET", f"/v2.0/cloud/thing/{device_id}/shadow/properties", {"codes": "switch_1"})
    (prop,) = result["result"]["properties"]
    assert (prop["code"], prop["dp_id"], prop["value"], prop["type"]) == (
        "switch_1",
        1,
        truth["switch_1"]["value"],
        "bool",
    )


def _login(api: Api, body: dict[str, Any]) -> dict[str, Any]:
    return api.call(
        "POST", "/v1.0/iot-01/associated-users/actions/authorized-login", body=orjson.dumps(body), token=""
    )


def test_app_user_login_acts_as_that_user_and_refresh_keeps_it(api: Api, client: TestClient) -> None:
    owner = client.get("/sim/fleet").json()["homes"][0]["owner_uid"]
    password = hashlib.md5(DEV_APP_PASSWORD.encode(), usedforsecurity=False).hexdigest()
    body = {"username": owner, "password": password, "country_code": "49", "schema": "smartlife"}
    login = _login(api, body)
    assert login["success"] is True, login
    assert login["result"]["uid"] == owner
    assert login["result"]["expire_time"] == 7200
    api.token = login["result"]["access_token"]
    own = api.call("GET", f"/v1.0/users/{owner}/devices")["result"]
    assert own
    assert all(d["uid"] == owner for d in own)
    refreshed = api.call("GET", f"/v1.0/token/{login['result']['refresh_token']}", token="")
    assert refreshed["result"]["uid"] == owner
    for wrong in ({"password": "0" * 32}, {"schema": "tuyasmart"}, {"username": "bay-nobody"}):
        _error(_login(api, {**body, **wrong}), 1106)
    _error(_login(api, {**body, "country_code": ""}), 1100)


def test_another_projects_login_is_refused(client: TestClient, clock: FakeClock) -> None:
    other = Api(client, clock, access_id=OTHER_ID, secret=OTHER_SECRET)
    _error(
        _login(other, {"username": "x", "password": "y", "country_code": "1", "schema": "smartlife"}), 1106
    )


@pytest.mark.parametrize("path", ["/v1.0/open-hub/access/config", "/v1.0/iot-03/open-hub/access-config"])
def test_mqtt_open_hub_is_not_simulated(api: Api, path: str) -> None:
    body = orjson.dumps({"uid": "x", "link_id": "y", "link_type": "mqtt", "topics": "device"})
    envelope = api.call("POST", path, body=body)
    _error(envelope, 28841105)
    assert "Pulsar" in envelope["msg"]
