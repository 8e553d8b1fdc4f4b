"""The process start-up every service gets from the kit: Motor's thread pool sized before motor is imported,
and the long-lived objects frozen out of the garbage collector's sight once the app is built."""

from __future__ import annotations

import gc
import logging
import os
import subprocess
import sys

import pytest
from pydantic import ValidationError

from fleet_shared.service import ProcessSettings, ServiceSettings, freeze_long_lived, prepare_process
from fleet_shared.service.process import MOTOR_POOL_VARIABLE, motor_pool_size
from fleet_tuya_sim.adapters.sinks import MemorySink
from fleet_tuya_sim.bootstrap import bootstrap as bootstrap_sim
from fleet_tuya_sim.domain.fleet import FleetSpec
from fleet_tuya_sim.settings import SimSettings

pytestmark = pytest.mark.unit

# Runs a service's console-script function in a fresh interpreter with `run_service` replaced by a probe that
# imports motor (as bootstrap would) and prints the size its pool got: the entry point must have called
# prepare_process() before anything imported motor.
PROBE = """
import fleet_shared.service as kit
import {module} as entry

def probe(name, settings, make_app):
    import motor.motor_asyncio
    from fleet_shared.service.process import motor_pool_size
    print(name, motor_pool_size(), settings.motor_max_workers)

kit.run_service = probe
if hasattr(entry, "run_service"):
    entry.run_service = probe
entry.main({argv})
"""

ENTRY_POINTS = {
    "ingest": ("fleet_ingest.__main__", ""),
    "status": ("fleet_status.__main__", "[]"),
    "pairing": ("fleet_pairing.__main__", ""),
    "unbinding": ("fleet_unbinding.__main__", "[]"),
    "ota": ("fleet_ota.__main__", ""),
    "tuya-sim": ("fleet_tuya_sim.__main__", "['serve']"),
}


def _run_entry_point(service: str, env: dict[str, str]) -> list[str]:
    module, argv = ENTRY_POINTS[service]
    base = {k: v for k, v in os.environ.items() if k not in (MOTOR_POOL_VARIABLE, "FLEET_GC_FREEZE")}
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module, argv=argv)],
        env=base | env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


@pytest.mark.parametrize("service", sorted(ENTRY_POINTS))
def test_every_entry_point_sizes_motors_pool_before_motor_is_imported(service: str) -> None:
    # Motor's own default is 5 per CPU: never 64
    assert _run_entry_point(service, {}) == [service, "64", "64"]


def test_motors_own_variable_still_sets_the_size() -> None:
    assert _run_entry_point("pairing", {MOTOR_POOL_VARIABLE: "7"}) == ["pairing", "7", "7"]


def test_every_service_reads_the_process_settings_by_one_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MOTOR_POOL_VARIABLE, "12")
    monkeypatch.setenv("FLEET_GC_FREEZE", "false")
    # tuya-sim's settings have a prefix of their own (FLEET_SIM_): these are read under the common names
    for settings in (ProcessSettings(), ServiceSettings(), SimSettings()):
        assert (settings.motor_max_workers, settings.gc_freeze) == (12, False)
    monkeypatch.delenv(MOTOR_POOL_VARIABLE)
    monkeypatch.delenv("FLEET_GC_FREEZE")
    assert (ServiceSettings().motor_max_workers, ServiceSettings().gc_freeze) == (64, True)


@pytest.mark.parametrize("value", ["0", "many", "5000"])
def test_a_bad_pool_size_stops_the_start(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(MOTOR_POOL_VARIABLE, value)
    with pytest.raises(ValidationError, match="MOTOR_MAX_WORKERS"):
        prepare_process()


def test_before_motor_is_imported_its_variable_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "motor.frameworks.asyncio", raising=False)
    monkeypatch.setenv(MOTOR_POOL_VARIABLE, "3")  # restored afterwards
    assert motor_pool_size() is None
    prepare_process(ProcessSettings(motor_max_workers=33))
    assert os.environ[MOTOR_POOL_VARIABLE] == "33"


def test_a_pool_motor_already_made_with_another_size_is_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import motor.motor_asyncio  # noqa: F401 - the pool is made on import

    size = motor_pool_size()
    assert size is not None
    monkeypatch.setenv(MOTOR_POOL_VARIABLE, "unchanged")
    with caplog.at_level(logging.WARNING, logger="fleet_shared.service.process"):
        prepare_process(ProcessSettings(motor_max_workers=size))
        assert not caplog.records
        prepare_process(ProcessSettings(motor_max_workers=size + 1))
    assert [r.getMessage() for r in caplog.records] == [
        f"Motor's thread pool has {size} threads, not MOTOR_MAX_WORKERS={size + 1}: "
        "motor was imported before prepare_process()"
    ]
    assert os.environ[MOTOR_POOL_VARIABLE] == "unchanged"


def test_freezing_moves_what_is_alive_out_of_the_collectors_generations() -> None:
    before = gc.get_freeze_count()
    try:
        assert freeze_long_lived(ProcessSettings(gc_freeze=False)) == 0
        assert gc.get_freeze_count() == before
        frozen = freeze_long_lived(ProcessSettings())
        assert frozen > max(before, 10_000)  # the interpreter and the libraries
        assert gc.get_freeze_count() > 10_000  # less what the log line freed since
    finally:
        gc.unfreeze()


def test_a_new_small_fleet_keeps_a_frozen_simulator_process_frozen() -> None:
    # the simulator unfreezes to let the previous fleet go: what the kit froze at start is frozen again
    sim = bootstrap_sim(SimSettings(), sink=MemorySink(), create_fleet=False).simulator
    gc.unfreeze()
    try:
        sim.install_fleet(FleetSpec(seed=1, devices=5, homes=1))
        assert gc.get_freeze_count() == 0  # not frozen at start (tests): a small fleet is left alone
        gc.freeze()
        sim.install_fleet(FleetSpec(seed=2, devices=5, homes=1))
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
