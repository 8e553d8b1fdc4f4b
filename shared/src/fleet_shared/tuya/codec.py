"""Tuya message-push codec (REFERENCE §2): envelope → (optional sign check) → base64 → AES-ECB/GCM →
strict JSON → typed message; and the reverse for the simulator and tests.

Every rejection is a `PushMessageRejected` with a stable `RejectReason`; details never contain key material
or plaintext, so they can go to logs and dead-letter records as they are.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import SecretStr

from fleet_shared.tuya import crypto
from fleet_shared.tuya.crypto import CipherError, EncryptionMode
from fleet_shared.tuya.errors import PushMessageRejected, RejectReason
from fleet_shared.tuya.messages import TuyaMessage, parse_message
from fleet_shared.tuya.signing import push_sign, verify_push_sign
from fleet_shared.tuya.strict_json import StrictJsonError, loads_object

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DecodedMessage",
    "EncodedMessage",
    "EncryptionMode",
    "PushCodec",
    "decode",
    "encode",
    "encrypt_ecb",
    "encrypt_gcm",
]

# Tuya push messages are a few hundred bytes; 256 KiB leaves room for large raw DPs and still bounds memory.
DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024

EM_PROPERTY = "em"
PV_DEFAULT = "2.0"


def _reject(reason: RejectReason, detail: str) -> PushMessageRejected:
    return PushMessageRejected(reason, detail)


@dataclass(frozen=True)
class DecodedMessage:
    """A decoded push message. `data` is the decrypted JSON (plaintext): it is left out of `repr`."""

    protocol: int
    t: int | None
    pv: str | None
    mode: EncryptionMode
    message: TuyaMessage
    data: dict[str, Any] = field(repr=False)
    sign_verified: bool = False

    @property
    def device_id(self) -> str | None:
        return self.message.device_id


@dataclass(frozen=True)
class EncodedMessage:
    """A message ready to publish: the envelope (Pulsar payload) and the Pulsar properties (`em`)."""

    envelope: dict[str, Any]
    properties: dict[str, str]

    def payload(self) -> bytes:
        return orjson.dumps(self.envelope)


def _secret_value(secret: str | SecretStr) -> str:
    return secret.get_secret_value() if isinstance(secret, SecretStr) else secret


def _b64decode(text: str) -> bytes:
    # Go's decoder ignores CR/LF; everything else outside the alphabet is an error (validate=True).
    cleaned = text.replace("\r", "").replace("\n", "")
    try:
        return base64.b64decode(cleaned, validate=True)
    except (binascii.Error, ValueError):
        raise _reject(RejectReason.DECODE, "data is not valid base64") from None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# Below this many brackets the nesting is far inside both parsers' depth limits (see `_loads_object`).
_FAST_PATH_MAX_BRACKETS = 64


def _loads_object(raw: bytes) -> dict[str, Any]:
    """`strict_json.loads_object`, with a fast path for compact JSON as Tuya and our simulator send it.

    The strict parser's duplicate-key pass is a pure-Python callback per object. When orjson re-serialises
    the parsed object to exactly the input bytes, the input cannot hold a duplicate key (the dict kept one
    pair per key, so the output would be shorter), and orjson already enforced the grammar. Anything else
    (whitespace, other escapes or number spellings, deep nesting) takes the strict path unchanged.
    """
    if raw.count(b"{") + raw.count(b"[") <= _FAST_PATH_MAX_BRACKETS:
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            value = None  # the strict path reports it
        if isinstance(value, dict) and orjson.dumps(value) == raw:
            return value
    return loads_object(raw)


class _Ciphers:
    """`crypto`'s ECB and GCM decryption with the cipher objects built once per key, not per message.

    ECB is stateless per block, so one decryptor serves every message through `update` (the input is a
    whole number of blocks, so nothing is buffered); the PKCS#7 check is the one `padding.PKCS7` makes.
    Not thread-safe: one codec per consuming thread.
    """

    def __init__(self, key: bytes) -> None:
        self._ecb = Cipher(algorithms.AES(key), modes.ECB()).decryptor()  # noqa: S305 - Tuya's format
        self._gcm = AESGCM(key)

    def ecb(self, blob: bytes) -> bytes:
        if not blob or len(blob) % crypto.AES_BLOCK:
            raise CipherError("ECB ciphertext length is not a positive multiple of 16")
        padded = self._ecb.update(blob)
        pad = padded[-1]
        if not 1 <= pad <= crypto.AES_BLOCK or padded[-pad:] != bytes((pad,)) * pad:
            raise CipherError("ECB padding invalid")
        return padded[:-pad]

    def gcm(self, blob: bytes) -> bytes:
        if len(blob) < crypto.GCM_NONCE_LEN + crypto.GCM_TAG_LEN:
            raise CipherError("GCM blob shorter than nonce + tag")
        try:
            return self._gcm.decrypt(blob[: crypto.GCM_NONCE_LEN], blob[crypto.GCM_NONCE_LEN :], None)
        except InvalidTag:
            raise CipherError("GCM authentication failed") from None


class PushCodec:
    """Decodes (and encodes) push messages for one Tuya project.

    `verify_sign` is off by default: no official SDK checks the envelope `sign`, and its recipe is only
    documented, not confirmed (REFERENCE §2).
    """

    def __init__(
        self,
        access_secret: str | SecretStr,
        *,
        verify_sign: bool = False,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        secret = _secret_value(access_secret)
        self._key = crypto.push_key(secret)
        self._ciphers = _Ciphers(self._key)
        self._secret = SecretStr(secret)
        self.verify_sign = verify_sign
        self.max_message_bytes = max_message_bytes

    def __repr__(self) -> str:
        return f"PushCodec(verify_sign={self.verify_sign}, max_message_bytes={self.max_message_bytes})"

    # -- decode ---------------------------------------------------------------------------------------------

    def decode(
        self, envelope: bytes | str | Mapping[str, Any], properties: Mapping[str, str] | None = None
    ) -> DecodedMessage:
        outer = self._parse_envelope(envelope)
        protocol = outer.get("protocol")
        if not _is_int(protocol):
            raise _reject(RejectReason.ENVELOPE, "protocol missing or not an integer")
        assert isinstance(protocol, int)
        t = outer.get("t")
        if t is not None and not _is_int(t):
            raise _reject(RejectReason.ENVELOPE, "t is not an integer")
        pv = outer.get("pv")
        if pv is not None and not isinstance(pv, str):
            raise _reject(RejectReason.ENVELOPE, "pv is not a string")
        # TCJ: `encryptPayload`, when present, is decrypted instead of `data` ("left over by history").
        ciphertext_b64 = outer.get("encryptPayload") or outer.get("data")
        if not isinstance(ciphertext_b64, str) or not ciphertext_b64:
            raise _reject(RejectReason.ENVELOPE, "data missing, empty or not a string")

        sign_verified = False
        if self.verify_sign:
            if not isinstance(outer.get("sign"), str):
                raise _reject(RejectReason.SIGN, "sign missing")
            if not verify_push_sign(outer, self._secret.get_secret_value()):
                raise _reject(RejectReason.SIGN, "sign mismatch")
            sign_verified = True

        blob = _b64decode(ciphertext_b64)
        mode, plaintext = self._decrypt(blob, outer, properties or {})
        try:
            data = _loads_object(plaintext)
        except StrictJsonError as exc:
            raise _reject(RejectReason.PAYLOAD, f"decrypted payload: {exc}") from None
        message = parse_message(protocol, data)
        return DecodedMessage(
            protocol=protocol,
            t=t if isinstance(t, int) else None,
            pv=pv if isinstance(pv, str) else None,
            mode=mode,
            message=message,
            data=data,
            sign_verified=sign_verified,
        )

    def _parse_envelope(self, envelope: bytes | str | Mapping[str, Any]) -> dict[str, Any]:
        if isinstance(envelope, Mapping):
            size = sum(len(v) for v in envelope.values() if isinstance(v, str))
            if size > self.max_message_bytes:
                raise _reject(RejectReason.TOO_LARGE, f"message over {self.max_message_bytes} bytes")
            return dict(envelope)
        raw = envelope.encode() if isinstance(envelope, str) else envelope
        if len(raw) > self.max_message_bytes:
            raise _reject(RejectReason.TOO_LARGE, f"message over {self.max_message_bytes} bytes")
        try:
            return _loads_object(raw)
        except StrictJsonError as exc:
            raise _reject(RejectReason.ENVELOPE, f"envelope: {exc}") from None

    def _decrypt(
        self, blob: bytes, outer: Mapping[str, Any], properties: Mapping[str, str]
    ) -> tuple[EncryptionMode, bytes]:
        """`em` decides when it names a known mode (no fallback: GCM is authenticated, ECB is the SDK
        default); otherwise `encryptVersion == "v2"` suggests GCM first; otherwise ECB, then GCM
        (REFERENCE §2)."""
        em = str(properties.get(EM_PROPERTY, "")).strip().lower()
        if em in (EncryptionMode.GCM.value, EncryptionMode.ECB.value):
            mode = EncryptionMode(em)
            try:
                return mode, self._decrypt_with(mode, blob)
            except CipherError as exc:
                raise _reject(RejectReason.DECRYPT, str(exc)) from None
        if str(outer.get("encryptVersion", "")).lower() == "v2":
            candidates = (EncryptionMode.GCM, EncryptionMode.ECB)
        else:
            # The SDKs' default: absent `em` means ECB; GCM is tried only when ECB cannot even unpad.
            candidates = (EncryptionMode.ECB, EncryptionMode.GCM)
        fallback: tuple[EncryptionMode, bytes] | None = None
        for mode in candidates:
            try:
                plaintext = self._decrypt_with(mode, blob)
            except CipherError:
                continue
            # A wrong-mode ECB "success" (valid-looking padding by chance) rarely yields a JSON object.
            if plaintext.lstrip()[:1] == b"{":
                return mode, plaintext
            fallback = fallback or (mode, plaintext)
        if fallback is not None:
            return fallback
        raise _reject(RejectReason.DECRYPT, "neither ECB nor GCM decryption succeeded")

    def _decrypt_with(self, mode: EncryptionMode, blob: bytes) -> bytes:
        if mode is EncryptionMode.GCM:
            return self._ciphers.gcm(blob)
        return self._ciphers.ecb(blob)

    # -- encode ---------------------------------------------------------------------------------------------

    def encrypt(self, plaintext: bytes, mode: EncryptionMode = EncryptionMode.GCM) -> str:
        """base64 of the ciphertext in Tuya's layout for `mode`."""
        if mode is EncryptionMode.GCM:
            return base64.b64encode(crypto.gcm_encrypt(self._key, plaintext)).decode()
        return base64.b64encode(crypto.ecb_encrypt(self._key, plaintext)).decode()

    def encode(
        self,
        payload: Mapping[str, Any] | bytes,
        *,
        protocol: int,
        mode: EncryptionMode = EncryptionMode.GCM,
        t: int | None = None,
        pv: str = PV_DEFAULT,
        extra: Mapping[str, Any] | None = None,
        sign: bool = True,
        em_property: bool = True,
    ) -> EncodedMessage:
        """Builds an envelope like Tuya's: `{protocol, pv, t, data, sign}` (+ `extra` keys), `em` property."""
        plaintext = payload if isinstance(payload, bytes) else orjson.dumps(dict(payload))
        envelope: dict[str, Any] = {
            "protocol": protocol,
            "pv": pv,
            "t": int(time.time() * 1000) if t is None else t,
            "data": self.encrypt(plaintext, mode),
        }
        if extra:
            envelope.update(extra)
        if sign:
            envelope["sign"] = push_sign(envelope, self._secret.get_secret_value())
        properties = {EM_PROPERTY: mode.value} if em_property else {}
        return EncodedMessage(envelope=envelope, properties=properties)


# -- module-level conveniences ------------------------------------------


def decode(
    envelope: bytes | str | Mapping[str, Any],
    properties: Mapping[str, str] | None,
    access_secret: str | SecretStr,
    *,
    verify_sign: bool = False,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> DecodedMessage:
    codec = PushCodec(access_secret, verify_sign=verify_sign, max_message_bytes=max_message_bytes)
    return codec.decode(envelope, properties)


def encode(
    payload: Mapping[str, Any] | bytes,
    access_secret: str | SecretStr,
    *,
    protocol: int,
    mode: EncryptionMode = EncryptionMode.GCM,
    t: int | None = None,
    pv: str = PV_DEFAULT,
    extra: Mapping[str, Any] | None = None,
    sign: bool = True,
) -> EncodedMessage:
    return PushCodec(access_secret).encode(
        payload, protocol=protocol, mode=mode, t=t, pv=pv, extra=extra, sign=sign
    )


def encrypt_gcm(plaintext: bytes, access_secret: str | SecretStr) -> str:
    """base64(nonce ‖ ciphertext ‖ tag) with the project key."""
    return PushCodec(access_secret).encrypt(plaintext, EncryptionMode.GCM)


def encrypt_ecb(plaintext: bytes, access_secret: str | SecretStr) -> str:
    """base64(AES-128-ECB(PKCS#7(plaintext))) with the project key."""
    return PushCodec(access_secret).encrypt(plaintext, EncryptionMode.ECB)
