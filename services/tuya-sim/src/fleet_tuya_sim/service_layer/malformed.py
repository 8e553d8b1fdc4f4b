"""Malformed push messages for chaos runs, each with the rejection a correct consumer must report
(the codec's RejectReason value), built with the project's own codec so only the intended defect differs."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

from fleet_shared.tuya import crypto
from fleet_shared.tuya.codec import EncryptionMode, PushCodec
from fleet_shared.tuya.errors import RejectReason
from fleet_shared.tuya.signing import push_sign

UNKNOWN_PROTOCOL_NUMBER = 999


class Malformation(StrEnum):
    BAD_BASE64 = "bad_base64"
    BAD_PADDING = "bad_padding"
    WRONG_KEY = "wrong_key"
    TRUNCATED_TAG = "truncated_tag"
    NON_JSON = "non_json"
    UNKNOWN_PROTOCOL = "unknown_protocol"


# What a consumer must make of each: a rejection reason, or (unknown protocol) a typed "unknown" message.
EXPECTED: dict[Malformation, str] = {
    Malformation.BAD_BASE64: RejectReason.DECODE.value,
    Malformation.BAD_PADDING: RejectReason.DECRYPT.value,
    Malformation.WRONG_KEY: RejectReason.DECRYPT.value,
    Malformation.TRUNCATED_TAG: RejectReason.DECRYPT.value,
    Malformation.NON_JSON: RejectReason.PAYLOAD.value,
    Malformation.UNKNOWN_PROTOCOL: "unknown_protocol",
}

_WRONG_SECRET = "wrongwro" + "ng0key0for0chaos" + "00000000"


@dataclass(frozen=True)
class MalformedMessage:
    kind: Malformation
    protocol: int
    envelope: dict[str, Any]
    properties: dict[str, str]
    expected: str

    def payload(self) -> bytes:
        return orjson.dumps(self.envelope)


def build(kind: Malformation, access_secret: str, device_id: str, t: int) -> MalformedMessage:
    codec = PushCodec(access_secret)
    sample = {"devId": device_id, "productKey": "chaos", "bizCode": "online", "bizData": {"time": t}, "ts": t}
    plaintext = orjson.dumps(sample)
    protocol = 20
    gcm = {"em": EncryptionMode.GCM.value}
    match kind:
        case Malformation.BAD_BASE64:
            data, props = "%%not*base64%%" + codec.encrypt(plaintext)[:8], gcm
        case Malformation.BAD_PADDING:
            # Plaintext of whole blocks ending in 0x00: dropping the padding block leaves an invalid pad byte.
            body = plaintext[:31].ljust(31, b" ") + b"\x00"
            blob = crypto.ecb_encrypt(crypto.push_key(access_secret), body)[:-16]
            data, props = base64.b64encode(blob).decode(), {"em": EncryptionMode.ECB.value}
        case Malformation.WRONG_KEY:
            data, props = PushCodec(_WRONG_SECRET).encrypt(plaintext, EncryptionMode.GCM), gcm
        case Malformation.TRUNCATED_TAG:
            blob = base64.b64decode(codec.encrypt(plaintext, EncryptionMode.GCM))[:-4]
            data, props = base64.b64encode(blob).decode(), gcm
        case Malformation.NON_JSON:
            data, props = codec.encrypt(b"this is not JSON {", EncryptionMode.GCM), gcm
        case Malformation.UNKNOWN_PROTOCOL:
            protocol = UNKNOWN_PROTOCOL_NUMBER
            data, props = codec.encrypt(plaintext, EncryptionMode.GCM), gcm
    envelope: dict[str, Any] = {"protocol": protocol, "pv": "2.0", "t": t, "data": data}
    envelope["sign"] = push_sign(envelope, access_secret)
    return MalformedMessage(kind, protocol, envelope, dict(props), EXPECTED[kind])
