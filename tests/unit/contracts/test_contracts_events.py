"""Domain rules the contracts enforce themselves."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from fleet_contracts import device, ota, pairing, topics, unbinding
from fleet_contracts.envelope import Envelope
from fleet_contracts.export import event_schemas

from .contracts_samples import DEVICE, HOME, MS, UID

pytestmark = pytest.mark.unit

FORBIDDEN_WORDS = ("secret", "password", "passwd", "ssid", "local_key", "access_key")


def _property_names(node: Any) -> set[str]:
    names: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "properties" and isinstance(value, dict):
                names |= set(value)
            names |= _property_names(value)
    elif isinstance(node, list):
        for item in node:
            names |= _property_names(item)
    return names


@pytest.mark.parametrize(("event_type", "schema"), sorted(event_schemas().items()))
def test_no_contract_has_a_field_for_secrets(event_type: str, schema: dict[str, Any]) -> None:
    leaking = {n for n in _property_names(schema) if any(w in n.lower() for w in FORBIDDEN_WORDS)}
    assert leaking == set(), event_type


def test_pairing_token_issued_rejects_a_secret() -> None:
    with pytest.raises(ValidationError, match="extra_forbidden"):
        pairing.PairingTokenIssued.model_validate(
            {
                "token": "nqMwn1Nd",
                "home_id": HOME,
                "owner_uid": UID,
                "mode": "EZ",
                "tuya_region": "EU",
                "expires_at": datetime(2025, 1, 1, tzinfo=UTC),
                "max_devices": 1,
                "secret": "reKE",
            }
        )


def test_pairing_modes_are_tuyas() -> None:
    assert {m.value for m in pairing.PairingMode} == {"EZ", "AP", "QR", "BLE", "combo"}


def test_list_mode_needs_devices() -> None:
    with pytest.raises(ValidationError, match="list mode needs at least one device id"):
        unbinding.RequestUnbindBatch(batch_id="b", operator_id="op", mode=unbinding.UnbindMode.LIST)


def test_qr_session_holds_at_most_30_devices() -> None:
    unbinding.RequestUnbindBatch(
        batch_id="b", operator_id="op", mode=unbinding.UnbindMode.QR, device_ids=[f"d{i}" for i in range(30)]
    )
    with pytest.raises(ValidationError, match="at most 30"):
        unbinding.RequestUnbindBatch(
            batch_id="b",
            operator_id="op",
            mode=unbinding.UnbindMode.QR,
            device_ids=[f"d{i}" for i in range(31)],
        )


def test_batch_device_ids_are_unique() -> None:
    with pytest.raises(ValidationError, match="unique"):
        unbinding.RequestUnbindBatch(
            batch_id="b", operator_id="op", mode=unbinding.UnbindMode.LIST, device_ids=[DEVICE, DEVICE]
        )


def test_refusal_causes() -> None:
    assert {c.value for c in unbinding.RefusalCause} == {
        "unauthorized",
        "quota_exceeded",
        "qr_expired",
        "qr_full",
        "device_offline",
        "not_bound",
        "cancelled",
        "tuya_error",
    }


@pytest.mark.parametrize(
    ("cause", "code", "ok"),
    [
        (unbinding.RefusalCause.TUYA_ERROR, "1106", True),
        (unbinding.RefusalCause.TUYA_ERROR, None, False),
        (unbinding.RefusalCause.QUOTA_EXCEEDED, None, True),
        (unbinding.RefusalCause.QUOTA_EXCEEDED, "1106", False),
    ],
)
def test_tuya_error_code_goes_with_tuya_error(
    cause: unbinding.RefusalCause, code: str | None, ok: bool
) -> None:
    def make() -> unbinding.BatchDeviceRefused:
        return unbinding.BatchDeviceRefused(
            batch_id="b", device_id=DEVICE, operator_id="op", cause=cause, tuya_error_code=code
        )

    if ok:
        make()
    else:
        with pytest.raises(ValidationError, match="tuya_error_code"):
            make()


@pytest.mark.parametrize(
    ("total", "unbound", "refused", "by_cause"),
    [(3, 1, 1, {}), (2, 1, 1, {unbinding.RefusalCause.UNAUTHORIZED: 2})],
)
def test_batch_finished_counts_must_add_up(
    total: int, unbound: int, refused: int, by_cause: dict[unbinding.RefusalCause, int]
) -> None:
    with pytest.raises(ValidationError, match=r"add up|must equal"):
        unbinding.UnbindBatchFinished(
            batch_id="b",
            operator_id="op",
            devices_total=total,
            unbound=unbound,
            refused=refused,
            refused_by_cause=by_cause,
        )


def test_upgrade_types_and_status_codes() -> None:
    assert [t.value for t in ota.UpgradeType] == [0, 1, 2, 3]
    assert {s.value for s in device.OtaUpgradeStatus} == {0, 1, 2, 3, 4, 5, 7}
    with pytest.raises(ValidationError):
        device.DeviceOtaProgressed(
            device_id=DEVICE,
            origin=device.TuyaOrigin(protocol=1002, push_time_ms=MS),
            channel=0,
            upgrade_status=6,
        )


@pytest.mark.parametrize("md5", ["0123", "0123456789ABCDEF0123456789ABCDEF", "g" * 32])
def test_firmware_md5_is_lower_case_hex(md5: str) -> None:
    with pytest.raises(ValidationError, match="md5"):
        ota.FirmwareRegistered(
            firmware_id="fw",
            product_id="pid",
            channel=9,
            version="1.0.0",
            size_bytes=1,
            md5=md5,
            signature="s",
            upgrade_type=ota.UpgradeType.FORCED,
            registered_by="op",
        )


def test_a_status_report_needs_dps_and_bounded_ids() -> None:
    origin = device.TuyaOrigin(protocol=4, push_time_ms=MS)
    with pytest.raises(ValidationError, match="dps"):
        device.DeviceStatusReported(device_id=DEVICE, origin=origin, dps=[])
    with pytest.raises(ValidationError, match="device_id"):
        device.DeviceStatusReported(
            device_id="x" * 65,
            origin=origin,
            dps=[device.DpReport(code="c", value=1, device_time_ms=MS)],
        )


def test_unknown_keys_in_tuya_shaped_payloads_are_errors_not_drops() -> None:
    with pytest.raises(ValidationError, match="extra_forbidden"):
        device.DpReport.model_validate({"code": "c", "value": 1, "device_time_ms": MS, "t": MS})


def test_device_topic_carries_every_device_module_event() -> None:
    declared = {
        cls.event_type()
        for cls in vars(device).values()
        if isinstance(cls, type)
        and issubclass(cls, Envelope)
        and cls.__module__ == device.__name__
        and "[" not in cls.__name__  # pydantic parks parametrized generics in the module namespace
    }
    assert declared == set(topics.DEVICE_EVENTS.envelope_classes())
