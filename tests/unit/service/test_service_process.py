"""`tests.support.ServiceProcess`, the e2e helper, on the one service that needs no servers: tuya-sim with its
push messages kept in memory."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import ServiceProcess

pytestmark = pytest.mark.unit


async def test_runs_a_registry_service_as_its_console_script(tmp_path: Path) -> None:
    token = "unit-control-token"
    sim = ServiceProcess(
        "tuya-sim",
        log=tmp_path / "sim.log",
        env={"FLEET_PULSAR_URL": "", "FLEET_SIM_CONTROL_TOKEN": token, "FLEET_SIM_DEVICES": "3"},
        api_key=token,  # tuya-sim takes no API keys: only sent as the bearer token of its control API
    )
    assert "FLEET_SIM_API_KEYS" not in sim.env
    sim.start()
    try:
        await sim.wait_ready(60)
        status, products = sim.get("/sim/products")
        assert status == 200, products
        assert products
        status, created = sim.post("/sim/fleet", {"seed": 3, "devices": 4, "homes": 1})
        assert status == 200, created
        assert len(created["bound_device_ids"]) == 4
        sim.api_key = "wrong"
        assert sim.get("/sim/products")[0] == 401
        assert sim.metric("process_cpu_seconds_total") > 0
    finally:
        code = sim.terminate()
    assert sim.stopped_gracefully(code), sim.log_tail()
