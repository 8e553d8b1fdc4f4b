"""AES primitives of Tuya's message push (REFERENCE §2): key derivation, AES-128-ECB/PKCS#7 and AES-128-GCM.

Decryption failures raise `CipherError` with a fixed, plaintext-free message; the codec maps it to the
`decrypt` reason class.
"""

from __future__ import annotations

import os
from enum import StrEnum

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

GCM_NONCE_LEN = 12
GCM_TAG_LEN = 16
AES_BLOCK = 16


class EncryptionMode(StrEnum):
    """Values of the Pulsar message property `em`."""

    ECB = "aes_ecb"
    GCM = "aes_gcm"


class CipherError(Exception):
    """Ciphertext could not be decrypted (message never includes key material or plaintext)."""


def push_key(access_secret: str) -> bytes:
    """The AES-128 key: Access Secret characters 8-23 as ASCII bytes (all official SDKs)."""
    part = access_secret[8:24]
    try:
        key = part.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError("access secret must be ASCII") from None
    if len(key) != 16:
        raise ValueError("access secret must be at least 24 characters")
    return key


def ecb_decrypt(key: bytes, ciphertext: bytes) -> bytes:
    if not ciphertext or len(ciphertext) % AES_BLOCK:
        raise CipherError("ECB ciphertext length is not a positive multiple of 16")
    decryptor = Cipher(algorithms.AES(key), modes.ECB()).decryptor()  # noqa: S305 - Tuya's legacy wire format
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        raise CipherError("ECB padding invalid") from None


def ecb_encrypt(key: bytes, plaintext: bytes) -> bytes:
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()  # noqa: S305 - Tuya's legacy wire format
    return encryptor.update(padded) + encryptor.finalize()


def gcm_decrypt(key: bytes, blob: bytes) -> bytes:
    """`blob` = nonce(12) ‖ ciphertext ‖ tag(16); no AAD."""
    if len(blob) < GCM_NONCE_LEN + GCM_TAG_LEN:
        raise CipherError("GCM blob shorter than nonce + tag")
    try:
        return AESGCM(key).decrypt(blob[:GCM_NONCE_LEN], blob[GCM_NONCE_LEN:], None)
    except InvalidTag:
        raise CipherError("GCM authentication failed") from None


def gcm_encrypt(key: bytes, plaintext: bytes, nonce: bytes | None = None) -> bytes:
    """Returns nonce ‖ ciphertext ‖ tag. A fresh random nonce unless one is given (tests only)."""
    nonce = os.urandom(GCM_NONCE_LEN) if nonce is None else nonce
    if len(nonce) != GCM_NONCE_LEN:
        raise ValueError("GCM nonce must be 12 bytes")
    return nonce + AESGCM(key).encrypt(nonce, plaintext, None)
