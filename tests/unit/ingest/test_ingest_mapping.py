"""Tuya message -> contract event for every protocol and bizCode; dead-letter decisions; dedup keys."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import orjson
import pytest

from fleet_contracts import device as ev
from fleet_contracts import topics
from fleet_contracts.deadletter import TuyaMessageDeadLetteredEvent
from fleet_ingest.domain.deadletters import dead_letter_event
from fleet_ingest.domain.dedup import EVENT_ID_NAMESPACE, SeenWindow, dedup_key, event_id
from fleet_ingest.domain.model import DeadLetter, Project, Publish, RejectClass, TuyaDelivery
from fleet_ingest.service_layer.handlers import handle_delivery
from fleet_shared.tuya.codec import EncryptionMode, PushCodec
from tests.unit.ingest.tuya_samples import ACCESS_ID, DEV, PID, SAMPLES, SECRET, UID, UNKNOWN, T

pytestmark = pytest.mark.unit

PROJECT = Project(access_id=ACCESS_ID, region="eu")
CODEC = PushCodec(SECRET)


def delivery(
    protocol: int,
    data: dict[str, Any] | bytes,
    *,
    mode: EncryptionMode = EncryptionMode.GCM,
    t: int = T,
    message_id: str = "1:2:3",
) -> TuyaDelivery:
    encoded = CODEC.encode(data, protocol=protocol, mode=mode, t=t)
    return TuyaDelivery(
        payload=encoded.payload(),
        properties=encoded.properties,
        message_id=message_id,
        topic=topics.tuya_event_topic(ACCESS_ID) + "-partition-0",
        key=DEV,
        publish_time_ms=t + 5,
    )


def publish(protocol: int, data: dict[str, Any], **kw: Any) -> Publish:
    outcome = handle_delivery(delivery(protocol, data, **kw), CODEC, PROJECT)
    assert isinstance(outcome, Publish), outcome
    return outcome


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_message_kind_maps_to_its_event(name: str) -> None:
    protocol, data, event_type = SAMPLES[name]
    outcome = publish(protocol, data)
    event = outcome.event
    assert event.type == event_type
    assert event.tenant == ACCESS_ID
    assert event.region == "eu"
    assert event.source == "/fleet/ingest"
    assert event.time.timestamp() * 1000 == T  # Tuya's push time: the envelope is deterministic
    assert event.id == event_id(ACCESS_ID, outcome.dedup_key)
    # the body round-trips through the topic's own codec (what consumers validate against)
    assert topics.DEVICE_EVENTS.decode(topics.DEVICE_EVENTS.encode(event)) == event
    if event_type != UNKNOWN or "devId" in str(data):
        assert outcome.key == DEV
        assert event.subject == DEV
    else:
        assert outcome.key is None
        assert event.subject is None
    if event_type == UNKNOWN:
        assert isinstance(event.data, ev.UnknownTuyaMessage)
        assert event.data.protocol == protocol
    else:
        assert event.data.origin.protocol == protocol
        assert event.data.origin.push_time_ms == T


def test_status_report_fields() -> None:
    event = publish(*SAMPLES["4/status"][:2]).event
    data = event.data
    assert isinstance(data, ev.DeviceStatusReported)
    assert data.device_id == DEV
    assert data.product_id == PID
    assert data.origin.message_id == "d-1"
    assert data.origin.biz_code is None
    assert [(d.code, d.dp_id, d.value, d.device_time_ms) for d in data.dps] == [
        ("switch_1", 1, True, T),
        ("temp", None, 215, T),  # no item time: Tuya's push time stands in
    ]


def test_iot_core_property_message_fields() -> None:
    data = publish(*SAMPLES["1000/devicePropertyMessage"][:2]).event.data
    assert isinstance(data, ev.DeviceStatusReported)
    assert data.product_id == PID
    assert data.origin.biz_code == "devicePropertyMessage"
    assert data.dps[0].dp_id == 1
    assert data.dps[0].value is False


def test_presence_time_in_seconds_is_normalised_to_millis() -> None:
    data = publish(*SAMPLES["20/offline"][:2]).event.data
    assert isinstance(data, ev.DeviceOffline)
    assert data.device_time_ms == T // 1000 * 1000


def test_bind_fields_and_space_id_as_home() -> None:
    legacy = publish(*SAMPLES["20/bindUser"][:2]).event.data
    assert isinstance(legacy, ev.DeviceBound)
    assert (legacy.owner_uid, legacy.home_id, legacy.device_uuid, legacy.pairing_token) == (
        UID,
        "home-1",
        "hw-1",
        "tok1",
    )
    iot = publish(*SAMPLES["1001/deviceBindSpace"][:2]).event.data
    assert isinstance(iot, ev.DeviceBound)
    assert iot.home_id == "77"


def test_ota_fields() -> None:
    legacy = publish(*SAMPLES["20/upgradeStatus"][:2]).event.data
    assert isinstance(legacy, ev.DeviceOtaProgressed)
    assert legacy.channel == 9
    assert legacy.upgrade_status is ev.OtaUpgradeStatus.UPGRADING
    iot = publish(*SAMPLES["1002/deviceOtaProgress"][:2]).event.data
    assert isinstance(iot, ev.DeviceOtaProgressed)
    assert iot.progress_percent == 40
    assert iot.firmware_version == "1.2.0"
    assert iot.upgrade_status is ev.OtaUpgradeStatus.UPGRADING


def test_dp_rename_takes_numeric_string_dp_id() -> None:
    data = publish(*SAMPLES["20/dpNameUpdate"][:2]).event.data
    assert isinstance(data, ev.DpRenamed)
    assert data.dp_id == 3


def test_unknown_events_carry_raw_data_without_secrets() -> None:
    data = {
        "bizCode": "newThing",
        "bizData": {"devId": DEV, "localKey": "0123456789abcdef", "n": {"password": "x"}},
    }
    event = publish(1001, data).event
    assert isinstance(event.data, ev.UnknownTuyaMessage)
    assert event.data.device_id == DEV
    assert event.data.biz_code == "newThing"
    assert event.data.raw_data == {"bizCode": "newThing", "bizData": {"devId": DEV, "n": {}}}
    assert b"0123456789abcdef" not in topics.DEVICE_EVENTS.encode(event)


def test_ecb_and_gcm_copies_of_one_message_are_the_same_event() -> None:
    protocol, data, _ = SAMPLES["20/online"]
    gcm = publish(protocol, data, mode=EncryptionMode.GCM)
    ecb = publish(protocol, data, mode=EncryptionMode.ECB, message_id="9:9:9")
    assert gcm.dedup_key == ecb.dedup_key
    assert topics.DEVICE_EVENTS.encode(gcm.event) == topics.DEVICE_EVENTS.encode(ecb.event)


# -- dead-letter decisions --------------------------------------------------------------------------------


def _raw(payload: bytes, properties: dict[str, str] | None = None) -> TuyaDelivery:
    return TuyaDelivery(
        payload=payload, properties=properties or {}, message_id="5:6:7", topic="t", publish_time_ms=T
    )


def _reason(d: TuyaDelivery, codec: PushCodec = CODEC) -> DeadLetter:
    outcome = handle_delivery(d, codec, PROJECT)
    assert isinstance(outcome, DeadLetter), outcome
    return outcome


def test_not_json_is_an_envelope_rejection() -> None:
    assert _reason(_raw(b"\x00\xffnot json")).reason is RejectClass.ENVELOPE


def test_missing_protocol_is_an_envelope_rejection() -> None:
    assert _reason(_raw(b'{"pv":"2.0","t":1,"data":"AAAA"}')).reason is RejectClass.ENVELOPE


def test_bad_base64_is_a_decode_rejection() -> None:
    assert _reason(_raw(b'{"protocol":4,"pv":"2.0","t":1,"data":"***"}')).reason is RejectClass.DECODE


def test_wrong_key_is_a_decrypt_rejection() -> None:
    other = PushCodec("ffffffffffffffffffffffffffffffff")
    d = delivery(*SAMPLES["20/online"][:2])
    assert _reason(d, other).reason is RejectClass.DECRYPT


def test_oversized_message_is_too_large() -> None:
    small = PushCodec(SECRET, max_message_bytes=1024)
    d = _raw(orjson.dumps({"protocol": 4, "data": "A" * 2000}))
    assert _reason(d, small).reason is RejectClass.TOO_LARGE


def test_payload_that_breaks_its_protocol_schema_is_a_payload_rejection() -> None:
    d = delivery(4, {"dataId": "x", "status": []})  # no devId
    assert _reason(d).reason is RejectClass.PAYLOAD


@pytest.mark.parametrize(
    ("protocol", "data"),
    [
        (20, {"devId": DEV, "bizCode": "bindUser", "bizData": {"ownerId": "h"}}),  # no uid
        (20, {"devId": DEV, "bizCode": "dpNameUpdate", "bizData": {"dpId": 999, "name": "x"}}),
        (20, {"devId": DEV, "bizCode": "upgradeStatus", "bizData": {"upgradeStatus": 6}}),
        (20, {"devId": DEV, "bizCode": "nameUpdate", "bizData": {}}),  # no name
        (4, {"devId": DEV, "status": [{"code": "", "value": 1}]}),
    ],
    ids=[
        "bind-without-uid",
        "dp-id-out-of-range",
        "unknown-upgrade-status",
        "rename-without-name",
        "empty-dp-code",
    ],
)
def test_decoded_but_contract_violating_messages_are_contract_rejections(
    protocol: int, data: dict[str, Any]
) -> None:
    rejection = _reason(delivery(protocol, data))
    assert rejection.reason is RejectClass.CONTRACT
    assert DEV not in rejection.detail
    assert "999" not in rejection.detail


def test_dead_letter_record_keeps_the_original_bytes_and_properties() -> None:
    d = TuyaDelivery(
        payload=b"garbage",
        properties={"em": "aes_gcm", "tid": "t-1"},
        message_id="1:2:3:4",
        topic=topics.tuya_event_topic(ACCESS_ID) + "-partition-3",
        key=DEV,
        publish_time_ms=T,
        redelivery_count=2,
    )
    rejection = _reason(d)
    event = dead_letter_event(d, rejection, project=PROJECT, subscription=topics.tuya_subscription(ACCESS_ID))
    assert isinstance(event, TuyaMessageDeadLetteredEvent)
    body = topics.INGEST_TUYA_DEAD_LETTER.encode(event)
    back = topics.INGEST_TUYA_DEAD_LETTER.decode(body)
    assert base64.b64decode(back.data.payload_base64) == b"garbage"
    assert back.data.properties == {"em": "aes_gcm", "tid": "t-1"}
    assert back.data.error_type == "envelope"
    assert back.data.reason
    assert back.data.subscription == f"{ACCESS_ID}-sub"
    assert back.data.redelivery_count == 2
    # the same message dead-letters under the same id (redeliveries dedupe downstream)
    again = dead_letter_event(d, rejection, project=PROJECT, subscription="s")
    assert again.id == event.id


def test_oversized_dead_letter_payload_is_truncated_within_the_contract() -> None:
    d = TuyaDelivery(payload=b"x" * 3_000_000, properties={}, message_id="1", topic="t", publish_time_ms=T)
    event = dead_letter_event(d, DeadLetter(RejectClass.TOO_LARGE, "big"), project=PROJECT, subscription="s")
    assert "truncated" in event.data.reason
    topics.INGEST_TUYA_DEAD_LETTER.decode(topics.INGEST_TUYA_DEAD_LETTER.encode(event))


# -- dedup keys and the window ----------------------------------------------------------------------------


def test_dedup_key_prefers_data_id_then_content_hash() -> None:
    status = CODEC.decode(delivery(*SAMPLES["4/status"][:2]).payload, {"em": "aes_gcm"})
    assert dedup_key(status) == f"4:data:{DEV}:d-1"
    prop = CODEC.decode(delivery(*SAMPLES["1000/devicePropertyMessage"][:2]).payload, {"em": "aes_gcm"})
    assert dedup_key(prop) == f"1000:data:{DEV}:p-1"
    online = CODEC.decode(delivery(*SAMPLES["20/online"][:2]).payload, {"em": "aes_gcm"})
    assert dedup_key(online).startswith("20:hash:")


def test_distinct_facts_get_distinct_keys_and_ids() -> None:
    a = publish(20, {"devId": DEV, "bizCode": "online", "bizData": {"time": T}})
    b = publish(20, {"devId": DEV, "bizCode": "online", "bizData": {"time": T + 1}})
    c = publish(1001, {"bizCode": "deviceOnline", "bizData": {"devId": DEV, "time": T}})
    assert len({a.dedup_key, b.dedup_key, c.dedup_key}) == 3
    assert len({a.event.id, b.event.id, c.event.id}) == 3


def test_event_ids_are_scoped_by_project() -> None:
    assert event_id("a", "k") != event_id("b", "k")
    assert event_id("a", "k") == event_id("a", "k")


@pytest.mark.parametrize("key", ["4:data:dev:1", "20:hash:" + "ab" * 16, "4:data:dév:ü-1", ""])
def test_event_ids_are_the_uuid5_of_project_and_key(key: str) -> None:
    # Ids must never change across versions: the fast computation is RFC 4122's uuid5, bit for bit.
    assert event_id(ACCESS_ID, key) == str(uuid.uuid5(EVENT_ID_NAMESPACE, f"{ACCESS_ID}/{key}"))


def test_seen_window_expires_by_time_and_by_size() -> None:
    window = SeenWindow(ttl_s=10, max_entries=3)
    window.add("a", 0)
    window.add("b", 5)
    assert window.contains("a", 9)
    assert not window.contains("a", 10.5)
    window.add("c", 11)
    window.add("d", 12)
    window.add("e", 13)
    assert not window.contains("b", 13)  # evicted (expired, then size)
    assert [k for k in "cde" if window.contains(k, 13)] == ["c", "d", "e"]
    window.add("f", 14)
    assert not window.contains("c", 14)
    assert len(window) == 3
