"""One realistic envelope per contract event type, shared by the contract tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fleet_contracts import deadletter, device, ota, pairing, status, unbinding
from fleet_contracts.envelope import Envelope, service_source

TENANT = "p8x7tenantaccessid"
REGION = "eu"
DEVICE = "bf3a1c2d4e5f6a7b8c9d0e"
PID = "k7ab2xyzpid"
UID = "eu1700000000001abcd"
HOME = "61234567"
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
MS = 1_740_830_400_000


def _origin(protocol: int = 20, biz_code: str | None = None) -> device.TuyaOrigin:
    return device.TuyaOrigin(protocol=protocol, biz_code=biz_code, push_time_ms=MS, message_id="m-1")


def _env(cls: type[Envelope[Any]], data: Any, service: str) -> Envelope[Any]:
    return cls.build(data, source=service_source(service), tenant=TENANT, region=REGION, time=T0)


def all_samples() -> list[Envelope[Any]]:
    """Every contract event type, once."""
    dev = {"device_id": DEVICE, "product_id": PID}
    return [
        _env(
            device.DeviceStatusReportedEvent,
            device.DeviceStatusReported(
                **dev,
                origin=_origin(4),
                dps=[
                    device.DpReport(code="switch_1", dp_id=1, value=True, device_time_ms=MS - 5),
                    device.DpReport(code="temp_set", dp_id=3, value=52, device_time_ms=MS - 5),
                    device.DpReport(code="mode", value="eco", device_time_ms=MS - 4),
                    device.DpReport(code="schedule", dp_id=17, value={"on": [1, 2]}, device_time_ms=MS - 3),
                ],
            ),
            "ingest",
        ),
        _env(
            device.DeviceOnlineEvent,
            device.DeviceOnline(
                **dev, origin=_origin(1001, "deviceOnline"), owner_uid=UID, device_time_ms=MS
            ),
            "ingest",
        ),
        _env(
            device.DeviceOfflineEvent,
            device.DeviceOffline(**dev, origin=_origin(20, "offline"), device_time_ms=MS),
            "ingest",
        ),
        _env(
            device.DeviceBoundEvent,
            device.DeviceBound(
                **dev,
                origin=_origin(20, "bindUser"),
                owner_uid=UID,
                home_id=HOME,
                device_uuid="uuid-123",
                pairing_token="nqMwn1Nd",
            ),
            "ingest",
        ),
        _env(
            device.DeviceUnboundEvent,
            device.DeviceUnbound(
                **dev, origin=_origin(1001, "deviceUnbindSpace"), owner_uid=UID, home_id=HOME
            ),
            "ingest",
        ),
        _env(
            device.DeviceRemovedEvent,
            device.DeviceRemoved(**dev, origin=_origin(20, "delete"), owner_uid=UID, home_id=HOME),
            "ingest",
        ),
        _env(
            device.DeviceRenamedEvent,
            device.DeviceRenamed(**dev, origin=_origin(20, "nameUpdate"), name="Kitchen plug"),
            "ingest",
        ),
        _env(
            device.DpRenamedEvent,
            device.DpRenamed(**dev, origin=_origin(20, "dpNameUpdate"), dp_id=1, name="Socket 1"),
            "ingest",
        ),
        _env(
            device.DeviceOtaProgressedEvent,
            device.DeviceOtaProgressed(
                **dev,
                origin=_origin(1002, "deviceOtaProgress"),
                channel=9,
                upgrade_status=device.OtaUpgradeStatus.UPGRADING,
                progress_percent=40,
            ),
            "ingest",
        ),
        _env(
            device.DeviceSignalReportedEvent,
            device.DeviceSignalReported(
                **dev,
                origin=_origin(20, "deviceSignal"),
                samples=[device.SignalSample(rssi=-61, memory=20480, device_time_ms=MS)],
            ),
            "ingest",
        ),
        _env(
            device.UnknownTuyaMessageEvent,
            device.UnknownTuyaMessage(
                device_id=DEVICE,
                protocol=1001,
                biz_code="deviceFreeze",
                push_time_ms=MS,
                raw_data={"bizCode": "deviceFreeze", "bizData": {"devId": DEVICE}, "ts": MS},
            ),
            "ingest",
        ),
        _env(
            status.ShadowChangedEvent,
            status.ShadowChanged(
                **dev,
                shadow_version=7,
                changes=[
                    status.DpChange(
                        code="switch_1",
                        dp_id=1,
                        old=status.DpSample(value=False, device_time_ms=MS - 60_000),
                        new=status.DpSample(value=True, device_time_ms=MS),
                    ),
                    status.DpChange(code="temp_set", new=status.DpSample(value=52, device_time_ms=MS)),
                ],
            ),
            "status",
        ),
        _env(
            status.PresenceChangedEvent,
            status.PresenceChanged(**dev, online=True, changed_at_ms=MS, last_seen_ms=MS),
            "status",
        ),
        _env(
            pairing.PairingTokenIssuedEvent,
            pairing.PairingTokenIssued(
                token="nqMwn1Nd",
                home_id=HOME,
                owner_uid=UID,
                mode=pairing.PairingMode.EZ,
                tuya_region="EU",
                expires_at=T0 + timedelta(minutes=10),
                max_devices=5,
            ),
            "pairing",
        ),
        _env(
            pairing.PairingTokenConsumedEvent,
            pairing.PairingTokenConsumed(token="nqMwn1Nd", home_id=HOME, paired_devices=5),
            "pairing",
        ),
        _env(
            pairing.PairingTokenExpiredEvent,
            pairing.PairingTokenExpired(token="nqMwn1Nd", home_id=HOME, paired_devices=0),
            "pairing",
        ),
        _env(
            pairing.DevicePairedEvent,
            pairing.DevicePaired(
                token="nqMwn1Nd", home_id=HOME, device_id=DEVICE, product_id=PID, owner_uid=UID
            ),
            "pairing",
        ),
        _env(
            pairing.PairingFailedEvent,
            pairing.PairingFailed(
                token="nqMwn1Nd",
                home_id=HOME,
                device_id=DEVICE,
                tuya_error_code="2001",
                tuya_error_message="x",
            ),
            "pairing",
        ),
        _env(
            pairing.PairingSessionEndedEvent,
            pairing.PairingSessionEnded(
                token="nqMwn1Nd",
                home_id=HOME,
                session_id="s-1",
                state=pairing.PairingSessionState.PARTIALLY_SUCCEEDED,
                paired_devices=2,
                failed_devices=1,
                unexpected_devices=0,
            ),
            "pairing",
        ),
        _env(
            pairing.PreviousOwnerNotifiedEvent,
            pairing.PreviousOwnerNotified(
                token="nqMwn1Nd", home_id=HOME, device_id=DEVICE, owner_uid=UID, previous_owner_uid="eu2"
            ),
            "pairing",
        ),
        _env(
            pairing.UnexpectedProductPairedEvent,
            pairing.UnexpectedProductPaired(
                token="nqMwn1Nd",
                home_id=HOME,
                device_id=DEVICE,
                product_id=PID,
                policy=pairing.UnexpectedProductPolicy.REMOVE,
            ),
            "pairing",
        ),
        _env(
            pairing.LateActivationEvent,
            pairing.LateActivation(
                token="nqMwn1Nd",
                home_id=HOME,
                device_id=DEVICE,
                session_state=pairing.PairingSessionState.CANCELLED,
            ),
            "pairing",
        ),
        _env(
            unbinding.RequestUnbindBatchCommand,
            unbinding.RequestUnbindBatch(
                batch_id="b-1",
                operator_id="op@example.com",
                mode=unbinding.UnbindMode.LIST,
                device_ids=[DEVICE],
            ),
            "unbinding",
        ),
        _env(
            unbinding.UnbindBatchRequestedEvent,
            unbinding.UnbindBatchRequested(
                batch_id="b-1", operator_id="op@example.com", mode=unbinding.UnbindMode.QR, product_id=PID
            ),
            "unbinding",
        ),
        _env(
            unbinding.BatchDeviceUnboundEvent,
            unbinding.BatchDeviceUnbound(batch_id="b-1", device_id=DEVICE, product_id=PID, operator_id="op"),
            "unbinding",
        ),
        _env(
            unbinding.BatchDeviceRefusedEvent,
            unbinding.BatchDeviceRefused(
                batch_id="b-1",
                device_id=DEVICE,
                operator_id="op",
                cause=unbinding.RefusalCause.TUYA_ERROR,
                tuya_error_code="1106",
            ),
            "unbinding",
        ),
        _env(
            unbinding.UnbindBatchFinishedEvent,
            unbinding.UnbindBatchFinished(
                batch_id="b-1",
                operator_id="op",
                devices_total=3,
                unbound=1,
                refused=2,
                refused_by_cause={
                    unbinding.RefusalCause.QUOTA_EXCEEDED: 1,
                    unbinding.RefusalCause.TUYA_ERROR: 1,
                },
            ),
            "unbinding",
        ),
        _env(
            ota.FirmwareRegisteredEvent,
            ota.FirmwareRegistered(
                firmware_id="fw-1",
                product_id=PID,
                channel=0,
                version="1.2.3",
                size_bytes=524_288,
                md5="0123456789abcdef0123456789abcdef",
                signature="c2lnbmF0dXJl",
                upgrade_type=ota.UpgradeType.SILENT,
                registered_by="firmware@example.com",
            ),
            "ota",
        ),
        _env(
            ota.ReleaseStartedEvent,
            ota.ReleaseStarted(
                release_id="r-1",
                firmware_id="fw-1",
                product_id=PID,
                channel=0,
                version="1.2.3",
                tuya_region="eu",
                stage=ota.ReleaseStage.VERIFICATION,
                target_devices=3,
                started_by="firmware@example.com",
            ),
            "ota",
        ),
        _env(
            ota.ReleasePausedEvent, ota.ReleasePaused(release_id="r-1", paused_by="op", reason="night"), "ota"
        ),
        _env(ota.ReleaseResumedEvent, ota.ReleaseResumed(release_id="r-1", resumed_by="op"), "ota"),
        _env(
            ota.ReleasePromotedEvent,
            ota.ReleasePromoted(
                release_id="r-1",
                from_stage=ota.ReleaseStage.CANARY,
                to_stage=ota.ReleaseStage.FULL,
                automatic=True,
                success_rate=0.99,
                sample_size=200,
                target_devices=10_000,
            ),
            "ota",
        ),
        _env(
            ota.ReleaseHaltedEvent,
            ota.ReleaseHalted(
                release_id="r-1",
                stage=ota.ReleaseStage.CANARY,
                automatic=True,
                reason="failure rate 12% over 10%",
                failure_rate=0.12,
                sample_size=100,
            ),
            "ota",
        ),
        _env(
            ota.ReleaseFinishedEvent,
            ota.ReleaseFinished(
                release_id="r-1",
                outcome=ota.ReleaseOutcome.COMPLETED,
                succeeded=10,
                failed=1,
                not_attempted=0,
            ),
            "ota",
        ),
        _env(
            ota.DeviceUpgradeStateChangedEvent,
            ota.DeviceUpgradeStateChanged(
                release_id="r-1",
                device_id=DEVICE,
                channel=0,
                previous_state=ota.DeviceUpgradeState.UPGRADING,
                state=ota.DeviceUpgradeState.SUCCEEDED,
                attempt=1,
                progress_percent=100,
                tuya_upgrade_status=device.OtaUpgradeStatus.DONE,
                reported_version="1.2.3",
            ),
            "ota",
        ),
        _env(
            deadletter.TuyaMessageDeadLetteredEvent,
            deadletter.MessageDeadLettered(
                message_id="(12,3,-1,0)",
                topic=f"persistent://{TENANT}/out/event",
                subscription=f"{TENANT}-sub",
                redelivery_count=0,
                properties={"em": "aes_gcm"},
                payload_base64="eyJwcm90b2NvbCI6NH0=",
                error_type="decrypt",
                reason="GCM tag mismatch",
            ),
            "ingest",
        ),
        _env(
            deadletter.MessageDeadLetteredEvent,
            deadletter.MessageDeadLettered(
                message_id="(1,2,-1,0)",
                topic="persistent://fleet/device/events",
                subscription="status",
                key=DEVICE,
                publish_time=T0,
                redelivery_count=5,
                payload_base64="e30=",
                error_type="ValidationError",
                reason="shadow write failed",
            ),
            "status",
        ),
    ]
