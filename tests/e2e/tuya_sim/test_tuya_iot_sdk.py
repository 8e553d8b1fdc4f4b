"""Tuya's tuya-iot-py-sdk against tuya-sim, through its public API only (pointed at the sim's URL): the
app-user login of a smart-home project (`connect`), its device manager (device list, specifications, status,
functions, factory infos, commands), re-login after 1010, and the MQTT hub's config answered with Tuya's
"API not subscribed" error (the sim's message push runs over Pulsar, not MQTT)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tuya_iot import AuthType, TuyaDeviceManager, TuyaOpenAPI, TuyaOpenMQ

from fleet_tuya_sim.settings import DEV_APP_PASSWORD

from .support import new_project, sim_process, truth

pytestmark = pytest.mark.e2e


def _ok(answer: dict[str, Any]) -> Any:
    assert answer["success"] is True, answer
    return answer["result"]


async def test_app_user_session(unique: str, tmp_path: Path) -> None:
    project = new_project(unique)
    sim = sim_process(project, tmp_path / "sim.log", env={"FLEET_SIM_APP_PASSWORD": "s3cret-app-pass"})
    sim.start()
    try:
        await sim.wait_ready()
        devices = truth(sim)["fleet"]["devices"]
        owner = next(t["uid"] for d, t in sorted(devices.items()) if t["bound"] and t["online"])
        own = {d: t for d, t in devices.items() if t["uid"] == owner}

        api = TuyaOpenAPI(sim.url, project.access_id, project.access_secret, AuthType.SMART_HOME)
        wrong = api.connect(owner, DEV_APP_PASSWORD, "49", "smartlife")  # the default is not this project's
        assert (wrong["success"], wrong["code"]) == (False, 1106)
        login = _ok(api.connect(owner, "s3cret-app-pass", "49", "smartlife"))
        assert login["uid"] == owner
        assert api.is_connect()

        manager = TuyaDeviceManager(api, TuyaOpenMQ(api))  # the MQ thread is never started
        manager.update_device_list_in_smart_home()
        assert set(manager.device_map) == set(own)
        device_id, device = next((d, t) for d, t in sorted(own.items()) if t["online"])
        cached = manager.device_map[device_id]
        assert cached.status == {code: dp["value"] for code, dp in device["dps"].items()}
        assert set(cached.status_range) == set(device["dps"])
        assert cached.function, "no functions cached from the specifications"

        status = _ok(manager.get_device_status(device_id))
        assert {s["code"]: s["value"] for s in status} == cached.status
        assert _ok(manager.get_device_info(device_id))["uid"] == owner
        assert _ok(manager.get_device_functions(device_id))["functions"]
        assert _ok(manager.get_device_specification(device_id))["status"]
        (info,) = _ok(manager.get_factory_info([device_id]))
        assert info["id"] == device_id

        code, dp = next(
            (c, v) for c, v in device["dps"].items() if isinstance(v["value"], bool) and c in cached.function
        )
        assert _ok(manager.send_commands(device_id, [{"code": code, "value": not dp["value"]}])) is True
        assert truth(sim)["fleet"]["devices"][device_id]["dps"][code]["value"] is (not dp["value"])
        manager.update_device_caches([device_id])  # devices by id, their status, their specifications
        assert manager.device_map[device_id].status[code] is (not dp["value"])

        # every token ends: the next call answers 1010 and the SDK logs the app user in again by itself
        first_token = api.token_info.access_token
        assert sim.post("/sim/tokens/expire")[0] == 200
        expired = api.get(f"/v1.0/devices/{device_id}")
        assert (expired["success"], expired["code"]) == (False, 1010)
        assert api.token_info.access_token not in ("", first_token)
        assert _ok(api.get(f"/v1.0/devices/{device_id}"))["uid"] == owner

        mq_config = api.post(
            "/v1.0/open-hub/access/config",
            {
                "uid": owner,
                "link_id": "e2e",
                "link_type": "mqtt",
                "topics": "device",
                "msg_encrypted_version": "1.0",
            },
        )
        assert (mq_config["success"], mq_config["code"]) == (False, 28841105)
    finally:
        sim.terminate()
