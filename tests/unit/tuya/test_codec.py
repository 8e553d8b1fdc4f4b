"""Push codec: every vector of vectors.json, the em/encryptVersion fallbacks, strict JSON, typed messages,
and property tests (round trip in both modes; tampering always rejected, never a crash)."""

from __future__ import annotations

import base64
import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleet_shared.tuya import messages as m
from fleet_shared.tuya.codec import EncryptionMode, PushCodec, encode, encrypt_ecb, encrypt_gcm
from fleet_shared.tuya.errors import PushMessageRejected, RejectReason
from fleet_shared.tuya.signing import push_sign

from .conftest import load_vectors

pytestmark = pytest.mark.unit

SECRET = "4f1c9e0b7a6d5c3e2f1a0b9c8d7e6f5a"
PUSH = load_vectors()["push_messages"]
GOOD = [v for v in PUSH if v["expect"]["ok"]]
BAD = [v for v in PUSH if not v["expect"]["ok"]]


def _raw(envelope: dict[str, Any]) -> bytes:
    return json.dumps(envelope).encode()


@pytest.mark.parametrize("vector", GOOD, ids=[v["name"] for v in GOOD])
def test_good_vectors_decode_to_expected_data(vector: dict[str, Any]) -> None:
    codec = PushCodec(vector["access_secret"])
    decoded = codec.decode(_raw(vector["envelope"]), vector["pulsar_properties"])
    assert decoded.protocol == vector["expect"]["protocol"]
    assert decoded.data == vector["expect"]["data"]
    assert not isinstance(decoded.message, m.UnknownProtocolMessage | m.UnknownBizCodeMessage)
    assert decoded.device_id is not None


@pytest.mark.parametrize("vector", GOOD, ids=[v["name"] for v in GOOD])
def test_good_vectors_pass_sign_verification_when_enabled(vector: dict[str, Any]) -> None:
    codec = PushCodec(vector["access_secret"], verify_sign=True)
    decoded = codec.decode(vector["envelope"], vector["pulsar_properties"])
    assert decoded.sign_verified


@pytest.mark.parametrize("vector", BAD, ids=[v["name"] for v in BAD])
def test_bad_vectors_rejected_with_reason(vector: dict[str, Any]) -> None:
    codec = PushCodec(vector["access_secret"])
    with pytest.raises(PushMessageRejected) as info:
        codec.decode(_raw(vector["envelope"]), vector["pulsar_properties"])
    assert info.value.reason == vector["expect"]["reason"]
    assert vector["access_secret"] not in str(info.value)
    assert vector["access_secret"][8:24] not in repr(info.value)


def test_vector_messages_are_typed() -> None:
    by_name = {v["name"]: v for v in GOOD}
    expected = {
        "p4-status-ecb": m.StatusReport,
        "p20-online-gcm": m.DeviceOnline,
        "p20-offline-gcm": m.DeviceOffline,
        "p20-nameUpdate-gcm": m.DeviceNameUpdate,
        "p20-bindUser-gcm": m.DeviceBindUser,
        "p20-delete-gcm": m.DeviceDelete,
        "p20-upgradeStatus-gcm": m.DeviceUpgradeStatus,
        "p1000-property-gcm": m.DevicePropertyMessage,
        "p1001-online-gcm": m.IotDeviceOnline,
    }
    codec = PushCodec(SECRET)
    for name, cls in expected.items():
        v = by_name[name]
        assert type(codec.decode(v["envelope"], v["pulsar_properties"]).message) is cls, name
    status = codec.decode(by_name["p4-status-ecb"]["envelope"], {}).message
    assert isinstance(status, m.StatusReport)
    assert [i.dp_id for i in status.status] == [1, 19]
    upgrade = codec.decode(by_name["p20-upgradeStatus-gcm"]["envelope"], {"em": "aes_gcm"}).message
    assert isinstance(upgrade, m.DeviceUpgradeStatus)
    assert upgrade.biz_data.upgrade_status == 2
    bind = codec.decode(by_name["p20-bindUser-gcm"]["envelope"], {"em": "aes_gcm"}).message
    assert isinstance(bind, m.DeviceBindUser)
    assert bind.biz_data.token == "nqMwn1Nd"


def test_sign_mismatch_rejected_only_when_verification_on() -> None:
    v = GOOD[0]
    envelope = {**v["envelope"], "sign": "0" * 32}
    assert PushCodec(SECRET).decode(envelope, v["pulsar_properties"]).protocol == 4
    with pytest.raises(PushMessageRejected) as info:
        PushCodec(SECRET, verify_sign=True).decode(envelope, v["pulsar_properties"])
    assert info.value.reason is RejectReason.SIGN


def test_size_limit() -> None:
    v = GOOD[0]
    with pytest.raises(PushMessageRejected) as info:
        PushCodec(SECRET, max_message_bytes=100).decode(_raw(v["envelope"]), {})
    assert info.value.reason is RejectReason.TOO_LARGE


@pytest.mark.parametrize(
    "raw",
    [
        b"[1,2]",
        b"not json",
        b'{"protocol": 4, "protocol": 20, "data": "AAAA"}',
        b'{"protocol": NaN}',
        b"\xff",
    ],
)
def test_bad_envelopes(raw: bytes) -> None:
    with pytest.raises(PushMessageRejected) as info:
        PushCodec(SECRET).decode(raw, {})
    assert info.value.reason is RejectReason.ENVELOPE


@pytest.mark.parametrize(
    "envelope",
    [
        {"protocol": "4", "t": 1, "data": "AAAA"},
        {"protocol": True, "t": 1, "data": "AAAA"},
        {"protocol": 4, "t": "1", "data": "AAAA"},
        {"protocol": 4, "t": 1, "data": 5},
        {"protocol": 4, "t": 1, "data": ""},
    ],
)
def test_mistyped_envelope_fields(envelope: dict[str, Any]) -> None:
    with pytest.raises(PushMessageRejected) as info:
        PushCodec(SECRET).decode(envelope, {})
    assert info.value.reason is RejectReason.ENVELOPE


def _gcm_envelope(plaintext: bytes, protocol: int = 4, **extra: Any) -> dict[str, Any]:
    return {"protocol": protocol, "pv": "2.0", "t": 1, "data": encrypt_gcm(plaintext, SECRET), **extra}


@pytest.mark.parametrize(
    "plaintext",
    [
        b'{"devId": "a", "devId": "b", "status": []}',  # duplicate key
        b'{"devId": "a", "status": [], "x": NaN}',
        b'{"devId": "a", "status": [], "x": 1e400}',
        b'{"devId": "a", "status": [], "x": "\\ud800"}',  # lone surrogate
        b'["not", "an", "object"]',
        b'"string"',
        b"\xff\xfe",
        b'{"devId": "a"}',  # protocol 4 without status
        b'{"devId": 5, "status": []}',
    ],
)
def test_strict_payload_json_and_schema(plaintext: bytes) -> None:
    with pytest.raises(PushMessageRejected) as info:
        PushCodec(SECRET).decode(_gcm_envelope(plaintext), {"em": "aes_gcm"})
    assert info.value.reason is RejectReason.PAYLOAD
    assert plaintext.decode(errors="replace") not in info.value.detail


def test_unknown_protocol_and_bizcode_are_typed_not_dropped() -> None:
    codec = PushCodec(SECRET)
    unknown_protocol = codec.decode(_gcm_envelope(b'{"anything": 1}', protocol=25), {"em": "aes_gcm"})
    assert isinstance(unknown_protocol.message, m.UnknownProtocolMessage)
    assert unknown_protocol.message.data == {"anything": 1}
    assert unknown_protocol.device_id is None
    top = codec.decode(_gcm_envelope(b'{"devId": "d0", "x": 1}', protocol=22), {"em": "aes_gcm"})
    assert isinstance(top.message, m.UnknownProtocolMessage)
    assert top.device_id == "d0"
    nested = codec.decode(
        _gcm_envelope(b'{"bizCode": "spaceCreate", "bizData": {"devId": "d2"}}', protocol=1010),
        {"em": "aes_gcm"},
    )
    assert isinstance(nested.message, m.UnknownProtocolMessage)
    assert nested.device_id == "d2"
    for odd in (b'{"devId": ""}', b'{"devId": 7}', b'{"bizData": [1]}', b'{"bizData": {"devId": null}}'):
        assert codec.decode(_gcm_envelope(odd, protocol=25), {"em": "aes_gcm"}).device_id is None
    payload = b'{"bizCode": "brandNew", "bizData": {"devId": "d1"}, "ts": 1}'
    unknown_biz = codec.decode(_gcm_envelope(payload, protocol=1001), {"em": "aes_gcm"})
    assert isinstance(unknown_biz.message, m.UnknownBizCodeMessage)
    assert unknown_biz.message.biz_code == "brandNew"
    assert unknown_biz.device_id == "d1"


def test_every_documented_biz_code_has_a_model() -> None:
    legacy = {
        "online", "offline", "nameUpdate", "dpNameUpdate", "bindUser", "delete", "upgradeStatus", "share",
        "deviceSignal", "deviceDpCommand", "userRegister", "userUpdate", "userDelete", "homeCreate",
        "homeUpdate", "homeDelete", "roomCreate", "roomNameUpdate", "roomDelete", "roomSort", "sceneExecute",
        "automationExternalAction",
    }  # fmt: skip
    assert set(m.BIZ_MODELS[20]) == legacy
    assert set(m.BIZ_MODELS[1000]) == {
        "devicePropertyMessage", "deviceQueryPropertyMessage", "deviceEventMessage",
        "deviceActionResponseMessage",
    }  # fmt: skip
    assert set(m.BIZ_MODELS[1001]) == {
        "deviceOnline", "deviceOffline", "deviceTransfer", "deviceFreeze", "deviceUnFreeze",
        "deviceBindSpace", "deviceUnbindSpace", "deviceNameUpdate",
    }  # fmt: skip
    assert set(m.BIZ_MODELS[1002]) == {"deviceOtaProgress"}


@pytest.mark.parametrize(
    ("protocol", "payload", "cls"),
    [
        (20, {"bizCode": "deviceSignal", "devId": "d", "reportData": [{"memory": 1, "rssi": -50, "t": 2}]},
         m.DeviceSignal),
        (20, {"bizCode": "deviceDpCommand", "devId": "d", "command": [{"dpId": 1, "value": True}]},
         m.DeviceDpCommand),
        (20, {"bizCode": "homeUpdate", "bizData": {"homeId": 1, "homeName": "h", "lon": 1.5, "lat": "2"}},
         m.HomeEvent),
        (20, {"bizCode": "sceneExecute", "gid": 3, "actions": [{"entityId": "e", "execStatus": 1}]},
         m.SceneExecute),
        (20, {"bizCode": "automationExternalAction", "automationId": "a1"}, m.AutomationExternalAction),
        (1001, {"bizCode": "deviceBindSpace", "bizData": {"devId": "d", "spaceId": 9, "token": "t"}},
         m.IotDeviceBindSpace),
        (1002, {"bizCode": "deviceOtaProgress", "bizData": {"devId": "d", "progress": 50, "other": 1}},
         m.IotDeviceOtaProgress),
    ],
)  # fmt: skip
def test_other_biz_codes(protocol: int, payload: dict[str, Any], cls: type[m.TuyaMessage]) -> None:
    decoded = PushCodec(SECRET).decode(
        _gcm_envelope(orjson.dumps(payload), protocol=protocol), {"em": "aes_gcm"}
    )
    assert type(decoded.message) is cls


def test_device_message_without_dev_id_is_a_payload_rejection() -> None:
    payload = orjson.dumps({"bizCode": "online", "bizData": {"time": 1}})
    with pytest.raises(PushMessageRejected) as info:
        PushCodec(SECRET).decode(_gcm_envelope(payload, protocol=20), {"em": "aes_gcm"})
    assert info.value.reason is RejectReason.PAYLOAD


def test_kind_key_in_payload_does_not_steer_typing() -> None:
    payload = orjson.dumps({"bizCode": "online", "devId": "d", "kind": "evil", "protocol": 9})
    decoded = PushCodec(SECRET).decode(_gcm_envelope(payload, protocol=20), {"em": "aes_gcm"})
    assert decoded.message.kind == "online"
    assert decoded.message.protocol == 20


def test_mode_fallbacks_without_em() -> None:
    codec = PushCodec(SECRET)
    body = b'{"devId": "d", "status": []}'
    # absent em: ECB first, GCM when ECB fails
    gcm = codec.decode(_gcm_envelope(body), {})
    assert gcm.mode is EncryptionMode.GCM
    ecb = codec.decode({"protocol": 4, "t": 1, "data": encrypt_ecb(body, SECRET)}, {})
    assert ecb.mode is EncryptionMode.ECB
    # encryptVersion v2: GCM first
    v2 = codec.decode(_gcm_envelope(body, encryptVersion="v2"), {"em": "unknown"})
    assert v2.mode is EncryptionMode.GCM
    # explicit em is strict: a GCM message announced as ECB is rejected
    with pytest.raises(PushMessageRejected) as info:
        codec.decode({"protocol": 4, "t": 1, "data": encrypt_ecb(body, SECRET)}, {"em": "aes_gcm"})
    assert info.value.reason is RejectReason.DECRYPT


def test_encrypt_payload_field_is_preferred_over_data() -> None:
    body = b'{"devId": "d", "status": []}'
    envelope = {"protocol": 4, "t": 1, "data": "garbage!", "encryptPayload": encrypt_gcm(body, SECRET)}
    assert PushCodec(SECRET).decode(envelope, {"em": "aes_gcm"}).data == {"devId": "d", "status": []}


def test_encode_builds_a_signed_envelope_with_em() -> None:
    encoded = encode({"devId": "d", "status": []}, SECRET, protocol=4, mode=EncryptionMode.ECB, t=5)
    assert encoded.properties == {"em": "aes_ecb"}
    assert set(encoded.envelope) == {"protocol", "pv", "t", "data", "sign"}
    assert encoded.envelope["sign"] == push_sign(encoded.envelope, SECRET)
    decoded = PushCodec(SECRET, verify_sign=True).decode(encoded.payload(), encoded.properties)
    assert decoded.data == {"devId": "d", "status": []}


def test_short_access_secret_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="24"):
        PushCodec("too-short")


def _decode_or_reason(
    codec: PushCodec, envelope: Any, properties: dict[str, str]
) -> RejectReason | dict[str, Any]:
    """Decoded data, or the reason class; any other exception fails the test (a crash)."""
    try:
        return codec.decode(envelope, properties).data
    except PushMessageRejected as exc:
        return exc.reason


# -- properties -------------------------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    scalars,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=12,
)
payloads = st.dictionaries(st.text(max_size=10), json_values, max_size=6)
modes = st.sampled_from([EncryptionMode.ECB, EncryptionMode.GCM])


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(payload=payloads, mode=modes, protocol=st.sampled_from([22, 25, 13001]))
def test_round_trip_random_json(payload: dict[str, Any], mode: EncryptionMode, protocol: int) -> None:
    codec = PushCodec(SECRET)
    encoded = codec.encode(payload, protocol=protocol, mode=mode)
    decoded = codec.decode(encoded.payload(), encoded.properties)
    assert decoded.mode is mode
    assert decoded.data == payload
    assert isinstance(decoded.message, m.UnknownProtocolMessage)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(payload=payloads, mode=modes, data=st.data())
def test_tampered_ciphertext_always_rejected(
    payload: dict[str, Any], mode: EncryptionMode, data: st.DataObject
) -> None:
    codec = PushCodec(SECRET)
    encoded = codec.encode({"devId": "d", "status": [], **payload}, protocol=4, mode=mode)
    blob = bytearray(base64.b64decode(encoded.envelope["data"]))
    tamper = data.draw(st.sampled_from(["flip", "truncate", "extend"]))
    if tamper == "flip":
        index = data.draw(st.integers(0, len(blob) - 1))
        blob[index] ^= data.draw(st.integers(1, 255))
    elif tamper == "truncate":
        blob = blob[: data.draw(st.integers(1, len(blob) - 1))]
    else:
        blob += data.draw(st.binary(min_size=1, max_size=32))
    envelope = {**encoded.envelope, "data": base64.b64encode(bytes(blob)).decode()}
    if mode is EncryptionMode.GCM:
        with pytest.raises(PushMessageRejected) as info:
            codec.decode(envelope, encoded.properties)
        assert info.value.reason in (RejectReason.DECRYPT, RejectReason.DECODE)
    else:
        # ECB is unauthenticated: a flip may survive the padding check, but the result is never a crash and
        # never silently the original message.
        outcome = _decode_or_reason(codec, envelope, encoded.properties)
        if isinstance(outcome, RejectReason):
            assert outcome in (RejectReason.DECRYPT, RejectReason.DECODE, RejectReason.PAYLOAD)
        else:
            assert outcome != {"devId": "d", "status": [], **payload}


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    raw=st.binary(max_size=300) | st.text(max_size=300).map(str.encode),
    em=st.sampled_from(["", "aes_gcm", "aes_ecb", "x"]),
)
def test_arbitrary_input_never_crashes(raw: bytes, em: str) -> None:
    codec = PushCodec(SECRET)
    for candidate in (raw, orjson.dumps({"protocol": 4, "t": 1, "data": base64.b64encode(raw).decode()})):
        outcome = _decode_or_reason(codec, candidate, {"em": em} if em else {})
        assert isinstance(outcome, RejectReason | dict)
