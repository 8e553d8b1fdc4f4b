"""The simulator's OTA faults: outcome rates per region and product, "done but old version", Tuya's rate limit
on the upgrade API, the count of upgrade commands, and Tuya's 5 while a sleepy device is asleep."""

from __future__ import annotations

import random

import pytest

from fleet_contracts.tuya import OtaUpgradeStatus
from fleet_tuya_sim.domain.errors import CloudRefusal
from fleet_tuya_sim.domain.events import OtaProgressed
from fleet_tuya_sim.domain.fleet import Fleet, FleetSpec
from fleet_tuya_sim.domain.ota import FirmwareRelease, OtaOutcome
from fleet_tuya_sim.domain.ota_faults import ANY, FaultRates
from fleet_tuya_sim.domain.products import PLUG, SENSOR

pytestmark = pytest.mark.unit

NOW = 1_750_000_000_000


def fleet(product: str, devices: int = 20, regions: tuple[str, ...] = ("eu", "us")) -> Fleet:
    f = Fleet.create(
        FleetSpec(
            seed=5, devices=devices, homes=4, regions=regions, product_ids=(product,), online_ratio=1.0
        ),
        NOW,
    )
    f.ota.step_ms, f.ota.step_pct = 1000, 50
    return f


def test_the_most_specific_rule_decides_the_outcome() -> None:
    f = fleet(PLUG.product_id)
    f.ota_faults.rates = {
        ("eu", PLUG.product_id): FaultRates(failure=1.0),
        (ANY, ANY): FaultRates(timeout=1.0),
    }
    assert f.ota_faults.rates_for("eu", PLUG.product_id) == FaultRates(failure=1.0)
    assert f.ota_faults.rates_for("us", PLUG.product_id) == FaultRates(timeout=1.0)
    rng = random.Random(1)
    draws = [FaultRates(failure=0.3, done_old_version=0.1).draw(rng) for _ in range(10_000)]
    assert 0.27 < draws.count(OtaOutcome.FAILURE) / len(draws) < 0.33
    assert 0.08 < draws.count(OtaOutcome.DONE_OLD_VERSION) / len(draws) < 0.12


def test_done_but_old_version_reports_done_and_keeps_the_old_firmware() -> None:
    f = fleet(PLUG.product_id)
    f.release_firmware(FirmwareRelease(PLUG.product_id, 0, "1.3.0"))
    device_id = next(iter(f.devices))
    f.plan_upgrade(device_id, 0, OtaOutcome.DONE_OLD_VERSION)
    f.start_upgrade(device_id, 0, NOW)
    f.advance(NOW + 10_000)
    [fw] = [c for c in f.firmware(device_id) if c.channel == 0]
    assert fw.upgrade_status is OtaUpgradeStatus.DONE
    assert f.devices[device_id].firmware[0] == "1.2.0"


def test_the_upgrade_api_limit_refuses_with_1199_and_every_command_is_counted() -> None:
    f = fleet(PLUG.product_id)
    f.release_firmware(FirmwareRelease(PLUG.product_id, 0, "1.3.0"))
    f.ota_faults.limit_upgrades(per_second=1.0, burst=2.0)
    first, second, third = list(f.devices)[:3]
    f.start_upgrade(first, 0, NOW)
    f.start_upgrade(second, 0, NOW)
    with pytest.raises(CloudRefusal) as refused:
        f.start_upgrade(third, 0, NOW)
    assert refused.value.code == 1199
    f.start_upgrade(third, 0, NOW + 1000)  # a second later the bucket has a token again
    with pytest.raises(CloudRefusal):
        f.start_upgrade(third, 0, NOW + 5000)  # already upgrading: refused, and counted
    assert f.ota_faults.commands[third].as_dict() == {"accepted": 1, "refused": {"1109": 1, "1199": 1}}


def test_a_sleepy_device_is_reported_waiting_until_it_wakes() -> None:
    f = fleet(SENSOR.product_id, regions=("eu",))
    f.release_firmware(FirmwareRelease(SENSOR.product_id, 0, "1.1.0"))
    device_id = next(iter(f.devices))
    f.wake(device_id, NOW, window_ms=1)
    (started,) = f.start_upgrade(device_id, 0, NOW + 10)
    assert isinstance(started, OtaProgressed)
    assert started.upgrade_status == OtaUpgradeStatus.WAITING_FOR_WAKE_UP
    [fw] = [c for c in f.firmware(device_id) if c.channel == 0]
    assert fw.upgrade_status is OtaUpgradeStatus.WAITING_FOR_WAKE_UP
    assert f.advance(NOW + 60_000) == []
    f.wake(device_id, NOW + 60_000, window_ms=60_000)
    f.advance(NOW + 61_000)  # awake: it starts downloading
    f.advance(NOW + 70_000)
    assert f.devices[device_id].firmware[0] == "1.1.0"


def test_the_rate_truth_counts_passed_commands_per_second_and_the_most_in_any_second() -> None:
    f = fleet(PLUG.product_id)
    f.ota_faults.limit_upgrades(20.0, 1.0)
    # 50 ms apart from NOW: all pass; one 20 ms after the last is refused; a pause of 200 ms
    times = [NOW + 50 * k for k in range(30)]
    for t in times:
        f.ota_faults.admit("d", t)
    with pytest.raises(CloudRefusal):
        f.ota_faults.admit("d", times[-1] + 20)
    f.ota_faults.admit("d", times[-1] + 250)
    truth = f.ota_faults.rate_truth()
    assert truth["passed"] == 31
    assert truth["refused_1199"] == 1
    assert truth["max_in_any_second"] == 20  # 50 ms apart: 20 in any second, never 21
    assert truth["per_second"] == [20, 11]
    assert truth["refused_per_second"] == [0, 1]
    assert truth["gap_ms"]["min"] == 50
    assert truth["gap_ms"]["max"] == 250
    assert truth["gap_ms"]["lost_ms"] == {"total": 200.0, "in_gaps_up_to_2x": 0.0, "in_longer_gaps": 200.0}
    assert truth["per_s_first_to_last"] == round(30 / 1.7, 3)
    f.ota_faults.limit_upgrades(10.0, 1.0)  # a new limit starts the record again
    assert f.ota_faults.rate_truth()["passed"] == 0
