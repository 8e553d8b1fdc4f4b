"""Tuya's tuya-connector-python against tuya-sim, through its public API only (pointed at the sim's URL):
token, refresh, renewal after 1010, the device calls a user makes, commands; and its `TuyaOpenPulsar`
WebSocket consumer decrypting the push stream of a project set to AES-ECB (the only mode it knows)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from tuya_connector import TuyaCloudPulsarTopic, TuyaOpenAPI, TuyaOpenPulsar

from tests.support import Stack

from .support import an_online_plug, new_project, sim_process, truth, tuya_layout_removed_after

pytestmark = pytest.mark.e2e


def _ok(answer: dict[str, Any]) -> Any:
    assert answer["success"] is True, answer
    return answer["result"]


async def test_refresh_before_expiry(unique: str, tmp_path: Path) -> None:
    project = new_project(unique)
    # a lifetime inside the connector's 60 s margin: it refreshes (single-use refresh token) before each call
    sim = sim_process(project, tmp_path / "sim.log", env={"FLEET_SIM_TOKEN_LIFETIME_S": "60"})
    sim.start()
    try:
        await sim.wait_ready()
        device_id, _ = an_online_plug(sim)
        api = TuyaOpenAPI(sim.url, project.access_id, project.access_secret)
        tokens = [_ok(api.connect())["access_token"]]
        for _ in range(3):
            assert _ok(api.get(f"/v1.0/devices/{device_id}"))["id"] == device_id
            tokens.append(api.token_info.access_token)
        assert len(set(tokens)) == 4, "the connector did not refresh before every call"
    finally:
        sim.terminate()


async def test_rest_calls_and_renewal_after_1010(unique: str, tmp_path: Path) -> None:
    project = new_project(unique)
    sim = sim_process(project, tmp_path / "sim.log")
    sim.start()
    try:
        await sim.wait_ready()
        device_id, device = an_online_plug(sim)
        api = TuyaOpenAPI(sim.url, project.access_id, project.access_secret)
        assert _ok(api.connect())["expire_time"] == 7200
        details = _ok(api.get(f"/v1.0/devices/{device_id}"))
        assert (details["id"], details["uid"], details["online"]) == (device_id, device["uid"], True)
        assert {s["code"]: s["value"] for s in _ok(api.get(f"/v1.0/devices/{device_id}/status"))} == {
            code: dp["value"] for code, dp in device["dps"].items()
        }
        spec = _ok(api.get(f"/v1.0/devices/{device_id}/specifications"))
        assert {f["code"] for f in spec["functions"]} == {"switch_1", "countdown_1", "relay_status"}
        assert _ok(api.get(f"/v1.0/devices/{device_id}/functions"))["category"] == "cz"
        assert _ok(api.get(f"/v1.0/iot-03/devices/{device_id}/status"))
        commands = {"commands": [{"code": "switch_1", "value": not device["dps"]["switch_1"]["value"]}]}
        assert _ok(api.post(f"/v1.0/iot-03/devices/{device_id}/commands", commands)) is True
        logs = _ok(api.get(f"/v1.0/devices/{device_id}/logs", {"type": "5,7", "size": 10}))
        assert {entry["event_id"] for entry in logs["logs"]} >= {5, 7}
        token = _ok(
            api.post(
                "/v1.0/device/paring/token",
                {"paring_type": "EZ", "uid": device["uid"], "time_zone_id": "UTC"},
            )
        )
        assert set(_ok(api.get(f"/v1.0/device/paring/tokens/{token['token']}"))) >= {"success", "failed"}
        assert isinstance(_ok(api.get(f"/v2.0/cloud/thing/{device_id}/firmware")), list)

        # every token ends now: the next call answers 1010 and the connector logs in again by itself
        assert sim.post("/sim/tokens/expire")[0] == 200
        expired = api.get(f"/v1.0/devices/{device_id}")
        assert (expired["success"], expired["code"]) == (False, 1010)
        assert _ok(api.get(f"/v1.0/devices/{device_id}"))["id"] == device_id
        # run by the service kit: SIGTERM is a graceful stop
        assert sim.stopped_gracefully(sim.terminate()), sim.log_tail()
    finally:
        sim.terminate()


def _subscribed(admin_url: str, access_id: str) -> bool:
    url = f"{admin_url}/admin/v2/persistent/{access_id}/out/event/subscriptions"
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - the test's own Pulsar
        return f"{access_id}-sub" in json.load(response)


async def test_open_pulsar_decrypts_an_ecb_project(stack: Stack, unique: str, tmp_path: Path) -> None:
    project = new_project(unique)
    sim = sim_process(project, tmp_path / "sim.log", stack=stack, env={"FLEET_SIM_ENCRYPTION": "aes_ecb"})
    with tuya_layout_removed_after(stack, project.access_id):
        sim.start()
        try:
            await sim.wait_ready()
            received: list[dict[str, Any]] = []
            lock = threading.Lock()

            def listener(decrypted: str) -> None:
                with lock:
                    received.append(json.loads(decrypted))

            ws = urllib.parse.urlsplit(stack.pulsar_admin_url)
            consumer = TuyaOpenPulsar(
                project.access_id, project.access_secret, f"ws://{ws.netloc}/", TuyaCloudPulsarTopic.PROD
            )
            consumer.add_message_listener(listener)
            consumer.daemon = True  # its reconnect loop outlives `stop()` by a few seconds
            consumer.start()
            try:
                deadline = time.monotonic() + 30
                while not _subscribed(stack.pulsar_admin_url, project.access_id):
                    assert time.monotonic() < deadline, "the WebSocket consumer never subscribed"
                    await asyncio.sleep(0.2)
                device_id, _ = an_online_plug(sim)
                assert sim.post("/sim/reports", {"count": 20})[0] == 200
                assert sim.post("/sim/flush")[0] == 200
                published = [m for m in truth(sim, messages=True)["messages"] if m["message_id"]]
                assert len(published) >= 20
                deadline = time.monotonic() + 60
                while len(received) < len(published):
                    assert time.monotonic() < deadline, f"{len(received)} of {len(published)} decrypted"
                    await asyncio.sleep(0.2)
            finally:
                consumer.stop()
        finally:
            sim.terminate()
    assert all(m["mode"] == "aes_ecb" for m in published)
    # every message decrypted to exactly what the sim published
    key = lambda data: json.dumps(data, sort_keys=True)  # noqa: E731
    assert sorted(map(key, received)) == sorted(key(m["data"]) for m in published)
    assert device_id  # the fleet had an online device reporting
