"""Typed errors of the Tuya edge: push-message rejections and OpenAPI errors per Tuya error code.

Messages never carry secrets or decrypted plaintext: rejection details name the failing step only, and API
error messages pass through the client's redactor before they are raised.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar


class TuyaError(Exception):
    """Base of every error raised by `fleet_shared.tuya`."""


# ----------------------------------------------------------------------------------------------------
# Push messages
# ----------------------------------------------------------------------------------------------------


class RejectReason(StrEnum):
    """Stable reason classes for a push message that cannot be decoded (dead-letter reason, metric label)."""

    TOO_LARGE = "too_large"  # raw message or decoded ciphertext over the configured limit
    ENVELOPE = "envelope"  # outer JSON unparsable, not an object, missing/mistyped protocol, t or data
    SIGN = "sign"  # envelope `sign` mismatch (only when verification is switched on)
    DECODE = "decode"  # `data` is not valid base64
    DECRYPT = "decrypt"  # wrong key, bad GCM tag, bad ECB padding, truncated ciphertext
    PAYLOAD = "payload"  # plaintext not strict JSON object, or fails the schema of its protocol/bizCode


class PushMessageRejected(TuyaError):
    """A push message was rejected. `reason` is a `RejectReason`; `detail` is safe to log."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail

    def __repr__(self) -> str:
        return f"PushMessageRejected(reason={self.reason.value!r}, detail={self.detail!r})"


# ----------------------------------------------------------------------------------------------------
# OpenAPI
# ----------------------------------------------------------------------------------------------------


class TuyaTransportError(TuyaError):
    """The request did not produce a usable response: network error, timeout, non-JSON body, HTTP 5xx."""

    def __init__(self, message: str, *, http_status: int | None = None) -> None:
        super().__init__(message)
        self.http_status = http_status

    @property
    def retryable(self) -> bool:
        # 5xx and network failures: the call may be repeated when it is idempotent.
        return self.http_status is None or self.http_status >= 500


class TuyaResponseError(TuyaError):
    """Tuya answered success, but the result does not have the documented shape (never retried)."""


class TuyaApiError(TuyaError):
    """Tuya answered `success: false`. `code` is Tuya's error code (None if absent), `tid` its trace id."""

    codes: ClassVar[frozenset[int]] = frozenset()
    retryable: ClassVar[bool] = False

    def __init__(self, code: int | None, msg: str, tid: str | None = None, *, http_status: int | None = None):
        super().__init__(f"Tuya error {code}: {msg} (tid={tid})")
        self.code = code
        self.msg = msg
        self.tid = tid
        self.http_status = http_status

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, msg={self.msg!r}, tid={self.tid!r})"


class TuyaSystemError(TuyaApiError):
    codes = frozenset({500})


class TuyaDataNotFoundError(TuyaApiError):
    codes = frozenset({1000})


class TuyaAuthError(TuyaApiError):
    """Credentials rejected: secret invalid, access_token missing, grant type invalid, client id invalid."""

    codes = frozenset({1001, 1002, 1003, 1005})


class TuyaSignatureError(TuyaApiError):
    codes = frozenset({1004})


class TuyaTokenError(TuyaApiError):
    """The access token is expired (1010), invalid (1011) or in an invalid state (1012)."""

    codes = frozenset({1012})


class TuyaTokenExpiredError(TuyaTokenError):
    codes = frozenset({1010})


class TuyaTokenInvalidError(TuyaTokenError):
    codes = frozenset({1011})


class TuyaClockSkewError(TuyaApiError):
    """1013: the request `t` is outside Tuya's window."""

    codes = frozenset({1013})


class TuyaParamError(TuyaApiError):
    codes = frozenset({1100, 1101, 1102, 1105, 1107, 1108, 1109})


class TuyaCommandError(TuyaApiError):
    codes = frozenset({1103})


class TuyaPermissionError(TuyaApiError):
    """1106 permission deny; 28841105 API not authorised for the project."""

    codes = frozenset({1106, 28841105})


class TuyaRateLimitError(TuyaApiError):
    """1110 concurrent requests over limit, 1199 requests too frequent."""

    codes = frozenset({1110, 1199})
    retryable = True


class TuyaBusyError(TuyaApiError):
    """1111 system busy."""

    codes = frozenset({1111})
    retryable = True


class TuyaDeviceOfflineError(TuyaApiError):
    codes = frozenset({2001})


class TuyaNotSupportedError(TuyaApiError):
    """2008 command or value not supported, 2009 device not supported."""

    codes = frozenset({2008, 2009})


class TuyaDeviceNotFoundError(TuyaApiError):
    codes = frozenset({2010})


_ERROR_CLASSES: tuple[type[TuyaApiError], ...] = (
    TuyaSystemError,
    TuyaDataNotFoundError,
    TuyaAuthError,
    TuyaSignatureError,
    TuyaTokenError,
    TuyaTokenExpiredError,
    TuyaTokenInvalidError,
    TuyaClockSkewError,
    TuyaParamError,
    TuyaCommandError,
    TuyaPermissionError,
    TuyaRateLimitError,
    TuyaBusyError,
    TuyaDeviceOfflineError,
    TuyaNotSupportedError,
    TuyaDeviceNotFoundError,
)

ERROR_CLASS_BY_CODE: dict[int, type[TuyaApiError]] = {
    code: cls for cls in _ERROR_CLASSES for code in cls.codes
}

RETRYABLE_CODES: frozenset[int] = frozenset(
    code for code, cls in ERROR_CLASS_BY_CODE.items() if cls.retryable
)
TOKEN_REACQUIRE_CODES: frozenset[int] = frozenset({1010, 1011})


def api_error(
    code: int | None, msg: str, tid: str | None = None, *, http_status: int | None = None
) -> TuyaApiError:
    """The typed exception for a Tuya error code (the base class for codes without their own)."""
    cls = ERROR_CLASS_BY_CODE.get(code, TuyaApiError) if code is not None else TuyaApiError
    return cls(code, msg, tid, http_status=http_status)
