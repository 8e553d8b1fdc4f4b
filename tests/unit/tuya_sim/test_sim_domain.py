"""Domain rules of the virtual fleet: determinism, DP values per schema, pairing per binding mode, OTA."""

from __future__ import annotations

import random

import orjson
import pytest

from fleet_contracts.tuya import OtaUpgradeStatus
from fleet_shared.tuya.models import DpSpec, PairingResult
from fleet_tuya_sim.domain import errors, push_messages
from fleet_tuya_sim.domain.binding import BindingMode, RebindDecision, rebind_decision
from fleet_tuya_sim.domain.errors import CloudRefusal
from fleet_tuya_sim.domain.events import DeviceBound, DeviceUnbound, DpReported, OtaProgressed, WentOnline
from fleet_tuya_sim.domain.fleet import Fleet, FleetSpec
from fleet_tuya_sim.domain.ota import FirmwareRelease, OtaJob, OtaOutcome
from fleet_tuya_sim.domain.products import CAMERA, CATALOG, PLUG, SENSOR, DpType
from fleet_tuya_sim.domain.push_messages import MessageFamily

pytestmark = pytest.mark.unit

NOW = 1_750_000_000_000
FIRST_TOKEN = "TOKEN001"


def _fleet(seed: int = 3, **kw: object) -> Fleet:
    spec = FleetSpec(seed=seed, **kw)  # type: ignore[arg-type]
    return Fleet.create(spec, NOW)


def _fingerprint(fleet: Fleet) -> list[tuple[object, ...]]:
    return [
        (
            d.device_id,
            d.uuid,
            d.product_id,
            d.uid,
            d.home_id,
            d.region,
            d.online,
            tuple(sorted((code, state.value) for code, state in d.dps.items())),
        )
        for d in fleet.devices.values()
    ]


# -- determinism ----------------------------------------------------------------------------------------


def test_same_seed_gives_the_same_fleet_and_the_same_reports() -> None:
    a, b = _fleet(42, devices=50, homes=5, unbound=3), _fleet(42, devices=50, homes=5, unbound=3)
    assert _fingerprint(a) == _fingerprint(b)
    assert [h.owner_uid for h in a.homes.values()] == [h.owner_uid for h in b.homes.values()]

    def run(fleet: Fleet) -> list[object]:
        out: list[object] = []
        for step in range(20):
            now = NOW + step * 100
            for device_id in fleet.pick_reporters(5):
                out += fleet.report(device_id, now)
            out += fleet.churn(0.05, now)
        return out

    assert run(a) == run(b)
    assert _fingerprint(a) == _fingerprint(b)


def test_different_seeds_give_different_fleets() -> None:
    assert _fingerprint(_fleet(1)) != _fingerprint(_fleet(2))


def test_fleet_layout_follows_the_spec() -> None:
    fleet = _fleet(5, devices=40, homes=4, unbound=6, regions=("eu", "in"))
    bound = [d for d in fleet.devices.values() if d.bound]
    assert len(bound) == 40
    assert len(fleet.devices) == 46
    assert {d.product_id for d in bound} == {p.product_id for p in CATALOG}
    for device in bound:
        home = fleet.homes[device.home_id or ""]
        assert device.uid == home.owner_uid
        assert device.region == home.region
    assert {d.region for d in fleet.devices.values()} <= {"eu", "in"}
    assert all(len(d.device_id) == 22 and d.device_id.startswith("bf") for d in fleet.devices.values())


# -- DP values ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dp", [dp for p in CATALOG for dp in p.dps], ids=lambda dp: dp.code)
def test_dp_values_respect_the_schema(dp: object) -> None:
    from fleet_tuya_sim.domain.products import DpSchema

    assert isinstance(dp, DpSchema)
    rng = random.Random(11)
    value = dp.initial_value(rng)
    assert dp.accepts(value)
    assert dp.accepts(dp.default_value()) or dp.type in (DpType.STRING, DpType.RAW)
    changed = 0
    for _ in range(300):
        new = dp.next_value(value, rng)
        assert dp.accepts(new), (dp.code, new)
        changed += new != value
        value = new
    assert changed > 250  # a report is a change


@pytest.mark.parametrize("dp", [dp for p in CATALOG for dp in p.dps], ids=lambda dp: dp.code)
def test_dp_schema_renders_as_tuya_specification(dp: object) -> None:
    from fleet_tuya_sim.domain.products import DpSchema

    assert isinstance(dp, DpSchema)
    spec = DpSpec.model_validate({"code": dp.code, "type": dp.type.value, "values": dp.values_json()})
    assert spec.type is not None
    assert spec.type.value == dp.type.value
    if dp.type is DpType.INTEGER:
        assert spec.values is not None
        assert spec.values.model_dump()["scale"] == dp.scale


def test_value_drift_is_small_and_scaled_values_stay_integers() -> None:
    dp = SENSOR.dp("va_temperature")
    rng = random.Random(1)
    value = dp.initial_value(rng)
    for _ in range(100):
        new = dp.next_value(value, rng)
        assert isinstance(new, int)
        assert isinstance(value, int)
        assert abs(new - value) <= max(1, (dp.max - dp.min) // 50)
        value = new


def test_device_timestamps_strictly_increase_even_within_one_millisecond() -> None:
    fleet = _fleet(devices=4, homes=1, online_ratio=1.0)
    device_id = next(iter(fleet.devices))
    ts = []
    for _ in range(5):
        (event,) = fleet.report(device_id, NOW + 10)
        assert isinstance(event, DpReported)
        ts.append(event.readings[0].t)
        assert {r.t for r in event.readings} == {event.t}
    assert ts == sorted(ts)
    assert len(set(ts)) == 5
    device = fleet.devices[device_id]
    for reading in event.readings:
        assert device.dps[reading.code].value == reading.value
        assert device.dps[reading.code].t == reading.t


def test_offline_and_unbound_devices_do_not_report() -> None:
    fleet = _fleet(devices=2, homes=1, unbound=1, online_ratio=0.0)
    assert all(fleet.report(d, NOW) == [] for d in fleet.devices)
    assert fleet.pick_reporters(3) == []


# -- pairing --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "current", "expected"),
    [
        (BindingMode.STRONG, None, RebindDecision.FIRST_BINDING),
        (BindingMode.STRONG, "a", RebindDecision.SAME_OWNER),
        (BindingMode.STRONG, "b", RebindDecision.REFUSED),
        (BindingMode.MEDIUM, "b", RebindDecision.REBIND_NOTIFY),
        (BindingMode.WEAK, "b", RebindDecision.REBIND),
    ],
)
def test_rebind_decision_per_binding_mode(
    mode: BindingMode, current: str | None, expected: RebindDecision
) -> None:
    assert rebind_decision(mode, current, "a") is expected


def _token(
    fleet: Fleet, uid: str, *, lifetime_s: int = 600, max_devices: int = 1, token: str = FIRST_TOKEN
) -> str:
    issued = fleet.issue_token(
        uid=uid,
        home_id=None,
        pairing_type="EZ",
        time_zone_id="Europe/Berlin",
        token=token,
        secret="S3cr",
        now_ms=NOW,
        lifetime_s=lifetime_s,
        max_devices=max_devices,
    )
    assert issued.assembled == issued.region + token + "S3cr"
    return issued.assembled


def test_first_pairing_binds_to_the_tokens_home_and_reports_online() -> None:
    fleet = _fleet(devices=0, homes=2, unbound=1)
    device_id = next(iter(fleet.devices))
    owner = next(iter(fleet.homes.values()))
    assembled = _token(fleet, owner.owner_uid)
    outcome = fleet.activate(device_id, assembled, NOW + 1000)
    assert outcome.ok
    assert [type(e) for e in outcome.events] == [DeviceBound, WentOnline]
    bound = outcome.events[0]
    assert isinstance(bound, DeviceBound)
    assert (bound.uid, bound.home_id, bound.token) == (owner.owner_uid, owner.home_id, "TOKEN001")
    device = fleet.device(device_id)
    assert (device.uid, device.home_id, device.online) == (owner.owner_uid, owner.home_id, True)
    result = PairingResult.model_validate(fleet.pairing_result("TOKEN001").result())
    assert [d.device_id for d in result.success] == [device_id]
    assert result.failed == []


def _bound_device(fleet: Fleet, mode: BindingMode) -> tuple[str, str]:
    """A device of `mode` and a uid of another owner."""
    for device in fleet.devices.values():
        if device.bound and device.binding_mode is mode:
            other = next(h.owner_uid for h in fleet.homes.values() if h.owner_uid != device.uid)
            return device.device_id, other
    raise AssertionError(mode)


def test_strong_bound_device_cannot_be_paired_by_another_owner() -> None:
    fleet = _fleet(devices=12, homes=3)
    device_id, other = _bound_device(fleet, BindingMode.STRONG)
    owner_before = fleet.devices[device_id].uid
    outcome = fleet.activate(device_id, _token(fleet, other), NOW + 1)
    assert not outcome.ok
    assert outcome.code == "113"
    assert outcome.events == ()
    assert fleet.devices[device_id].uid == owner_before
    failed = fleet.pairing_result("TOKEN001").result()["failed"]
    assert failed == [
        {"device_id": device_id, "name": fleet.devices[device_id].name, "code": "113", "msg": outcome.msg}
    ]
    # once removed by its owner, the same device pairs
    fleet.unbind(device_id, NOW + 2, reset=False)
    assert fleet.activate(device_id, _token(fleet, other, token="TOKEN002"), NOW + 3).ok


def test_medium_bound_device_moves_and_the_previous_owner_is_notified() -> None:
    fleet = _fleet(devices=12, homes=3)
    device_id, other = _bound_device(fleet, BindingMode.MEDIUM)
    previous = fleet.devices[device_id].uid
    outcome = fleet.activate(device_id, _token(fleet, other), NOW + 1)
    assert outcome.ok
    assert outcome.decision is RebindDecision.REBIND_NOTIFY
    unbound = outcome.events[0]
    assert isinstance(unbound, DeviceUnbound)
    assert unbound.uid == previous
    assert fleet.devices[device_id].uid == other
    assert fleet.notifications == [
        {
            "device_id": device_id,
            "previous_uid": previous,
            "previous_home_id": unbound.home_id,
            "new_uid": other,
            "t": NOW + 1,
        }
    ]


def test_weak_bound_device_moves_silently() -> None:
    fleet = _fleet(devices=12, homes=3)
    device_id, other = _bound_device(fleet, BindingMode.WEAK)
    outcome = fleet.activate(device_id, _token(fleet, other), NOW + 1)
    assert outcome.ok
    assert outcome.decision is RebindDecision.REBIND
    assert fleet.notifications == []


def test_expired_and_spent_tokens_fail_with_their_codes() -> None:
    fleet = _fleet(devices=0, homes=1, unbound=3)
    a, b, c = list(fleet.devices)
    owner = next(iter(fleet.homes.values())).owner_uid
    assembled = _token(fleet, owner, lifetime_s=60)
    assert fleet.activate(a, assembled, NOW + 1).ok
    spent = fleet.activate(b, assembled, NOW + 2)
    assert (spent.ok, spent.code) == (False, "1012")
    late = _token(fleet, owner, lifetime_s=60, max_devices=5, token="TOKEN002")
    expired = fleet.activate(c, late, NOW + 60_000)
    assert (expired.ok, expired.code) == (False, "1010")
    assert fleet.devices[c].uid is None


def test_multi_device_token_pairs_up_to_its_limit() -> None:
    fleet = _fleet(devices=0, homes=1, unbound=3)
    owner = next(iter(fleet.homes.values())).owner_uid
    assembled = _token(fleet, owner, max_devices=2)
    outcomes = [fleet.activate(d, assembled, NOW + 1).ok for d in fleet.devices]
    assert outcomes == [True, True, False]


def test_a_wrong_secret_or_unknown_token_never_pairs() -> None:
    fleet = _fleet(devices=0, homes=1, unbound=1)
    device_id = next(iter(fleet.devices))
    assembled = _token(fleet, next(iter(fleet.homes.values())).owner_uid)
    for bad in (assembled[:-1] + "x", "EU" + "nope0000" + "S3cr", "short"):
        with pytest.raises(CloudRefusal) as err:
            fleet.activate(device_id, bad, NOW)
        assert err.value.code == errors.PARAM_ILLEGAL
    assert fleet.pairing_result("TOKEN001").result() == {"success": [], "failed": []}


def test_token_for_unknown_user_or_foreign_home_is_refused() -> None:
    fleet = _fleet(devices=0, homes=2)
    homes = list(fleet.homes.values())
    with pytest.raises(CloudRefusal) as err:
        _token(fleet, "ay-nobody")
    assert err.value.code == errors.PERMISSION_DENY
    with pytest.raises(CloudRefusal):
        fleet.issue_token(
            uid=homes[0].owner_uid,
            home_id=homes[1].home_id,
            pairing_type="EZ",
            time_zone_id="UTC",
            token="T0000000",
            secret="abcd",
            now_ms=NOW,
            lifetime_s=600,
        )


# -- removal --------------------------------------------------------------------------------------------


def test_removal_hides_the_device_and_reset_restores_defaults() -> None:
    fleet = _fleet(devices=8, homes=2, online_ratio=1.0, product_ids=(PLUG.product_id,))
    device_id = next(iter(fleet.devices))
    events = fleet.unbind(device_id, NOW, reset=True)
    assert [type(e).__name__ for e in events] == ["WentOffline", "DeviceUnbound"]
    with pytest.raises(CloudRefusal) as err:
        fleet.device(device_id)
    assert err.value.code == errors.DEVICE_NOT_EXIST
    device = fleet.devices[device_id]
    assert {code: s.value for code, s in device.dps.items()} == {
        dp.code: dp.default_value() for dp in PLUG.dps
    }
    with pytest.raises(CloudRefusal):
        fleet.unbind(device_id, NOW, reset=False)


# -- OTA ------------------------------------------------------------------------------------------------


def _job(outcome: OtaOutcome, stop_at: int = 40, timeout_ms: int = 10_000) -> OtaJob:
    return OtaJob("d", 0, "1.0.0", "1.1.0", outcome, stop_at, timeout_ms, last_step_ms=0)


def test_ota_job_succeeds_in_steps() -> None:
    job = _job(OtaOutcome.SUCCESS)
    assert job.waiting
    assert job.advance(0, True, 1000, 25) == []
    assert job.advance(2000, True, 1000, 25) == [
        (OtaUpgradeStatus.UPGRADING, 25, 1000),
        (OtaUpgradeStatus.UPGRADING, 50, 2000),
    ]
    assert job.advance(4000, True, 1000, 25) == [
        (OtaUpgradeStatus.UPGRADING, 75, 3000),
        (OtaUpgradeStatus.DONE, 100, 4000),
    ]
    assert job.final
    assert job.advance(9000, True, 1000, 25) == []


def test_ota_job_fails_at_its_planned_progress() -> None:
    job = _job(OtaOutcome.FAILURE, stop_at=40)
    job.advance(0, True, 1000, 25)
    assert job.advance(5000, True, 1000, 25) == [
        (OtaUpgradeStatus.UPGRADING, 25, 1000),
        (OtaUpgradeStatus.FAILED, 40, 2000),
    ]


def test_ota_job_times_out_after_stalling() -> None:
    job = _job(OtaOutcome.TIMEOUT, stop_at=50, timeout_ms=10_000)
    job.advance(0, True, 1000, 25)
    steps = job.advance(9_000, True, 1000, 25)
    assert steps == [(OtaUpgradeStatus.UPGRADING, 25, 1000), (OtaUpgradeStatus.UPGRADING, 50, 2000)]
    assert job.advance(12_000, True, 1000, 25) == [(OtaUpgradeStatus.TIMED_OUT, 50, 10_000)]


def test_sleepy_device_waits_until_it_wakes() -> None:
    job = _job(OtaOutcome.SUCCESS)
    assert job.advance(60_000, False, 1000, 50) == []
    assert job.waiting
    job.advance(70_000, True, 1000, 50)
    assert job.started_ms == 70_000
    assert job.advance(72_000, True, 1000, 50)[-1] == (OtaUpgradeStatus.DONE, 100, 72_000)


def test_fleet_upgrade_reports_progress_and_the_new_version() -> None:
    fleet = _fleet(devices=8, homes=2, online_ratio=1.0, product_ids=(CAMERA.product_id,))
    fleet.ota.step_ms, fleet.ota.step_pct = 1000, 50
    device_id = next(iter(fleet.devices))
    with pytest.raises(CloudRefusal) as err:
        fleet.start_upgrade(device_id, 0, NOW)
    assert err.value.code == errors.NOT_SUPPORTED
    fleet.release_firmware(FirmwareRelease(CAMERA.product_id, 0, "3.5.0"))
    fleet.release_firmware(FirmwareRelease(CAMERA.product_id, 9, "1.2.0"))
    assert fleet.firmware(device_id)[0].upgrade_status is OtaUpgradeStatus.READY
    fleet.plan_upgrade(device_id, 0, OtaOutcome.SUCCESS)
    (started,) = fleet.start_upgrade(device_id, 0, NOW)
    assert isinstance(started, OtaProgressed)
    assert (started.upgrade_status, started.progress) == (2, 0)
    with pytest.raises(CloudRefusal) as busy:
        fleet.start_upgrade(device_id, 9, NOW)
    assert busy.value.code == errors.PARAM_ILLEGAL
    events = fleet.advance(NOW + 2000)
    assert [(e.upgrade_status, e.progress) for e in events if isinstance(e, OtaProgressed)] == [
        (2, 50),
        (3, 100),
    ]
    assert fleet.devices[device_id].firmware[0] == "3.5.0"
    assert fleet.firmware(device_id)[0].upgrade_status is OtaUpgradeStatus.DONE


def test_upgrade_steps_caught_up_at_once_keep_their_own_times() -> None:
    """A late tick must not stamp several steps with one time: the legacy `upgradeStatus` message has no
    progress, so two UPDATING steps at one `ts` would be the same message (and a consumer drops one)."""
    fleet = _fleet(devices=4, homes=1, online_ratio=1.0, product_ids=(PLUG.product_id,))
    fleet.ota.step_ms, fleet.ota.step_pct = 1000, 20
    device_id = next(iter(fleet.devices))
    fleet.release_firmware(FirmwareRelease(PLUG.product_id, 0, "1.3.0"))
    fleet.plan_upgrade(device_id, 0, OtaOutcome.SUCCESS)
    fleet.start_upgrade(device_id, 0, NOW)
    events = [e for e in fleet.advance(NOW + 10_000) if isinstance(e, OtaProgressed)]
    assert [(e.t, e.upgrade_status, e.progress) for e in events] == [
        (NOW + 1000, 2, 20),
        (NOW + 2000, 2, 40),
        (NOW + 3000, 2, 60),
        (NOW + 4000, 2, 80),
        (NOW + 5000, 3, 100),
    ]
    payloads = [orjson.dumps(p.data) for e in events for p in push_messages.payloads(e, MessageFamily.LEGACY)]
    assert len(set(payloads)) == len(events)


def test_offline_device_cannot_start_but_sleepy_device_queues() -> None:
    fleet = _fleet(devices=8, homes=2, online_ratio=0.0, product_ids=(PLUG.product_id, SENSOR.product_id))
    plug = next(d for d in fleet.devices.values() if d.product_id == PLUG.product_id)
    sensor = next(d for d in fleet.devices.values() if d.product_id == SENSOR.product_id)
    fleet.release_firmware(FirmwareRelease(PLUG.product_id, 0, "9.0.0"))
    fleet.release_firmware(FirmwareRelease(SENSOR.product_id, 0, "9.0.0"))
    with pytest.raises(CloudRefusal) as err:
        fleet.start_upgrade(plug.device_id, 0, NOW)
    assert err.value.code == errors.DEVICE_OFFLINE
    fleet.plan_upgrade(sensor.device_id, 0, OtaOutcome.SUCCESS)
    fleet.start_upgrade(sensor.device_id, 0, NOW)
    assert fleet.advance(NOW + 60_000) == []  # asleep (and offline)
    fleet.set_online(sensor.device_id, True, NOW + 60_000)  # wakes: online with a wake window
    assert fleet.advance(NOW + 60_000) == []  # starts downloading
    events = fleet.advance(NOW + 60_000 + 5 * fleet.ota.step_ms)
    assert [e.upgrade_status for e in events if isinstance(e, OtaProgressed)][-1] == 3
