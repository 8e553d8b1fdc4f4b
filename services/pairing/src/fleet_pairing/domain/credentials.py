"""What a device needs to join: the assembled token, the BLE token and the Wi-Fi credentials in a QR payload.

Rules:
- the assembled token is `region + token + secret`, exactly as Tuya's SDKs assemble it (REFERENCE §5);
- a BLE/combo device takes `assembled[2:10]`: Tuya's SDK passes `substringWithRange(2, 8)` of the token, i.e.
  the 8 characters after the 2-letter region (bluetooth-devices.txt); anything else is refused as too long;
- the QR payload is the compact JSON object `{"s": ssid, "p": password, "t": assembled token}` in that key
  order, UTF-8 (as NSJSONSerialization writes it in Tuya's camera guide), so any SSID or password a JSON
  parser can read round-trips: quotes and backslashes are escaped, non-ASCII characters kept as UTF-8;
- an SSID is 1-32 bytes of UTF-8 (IEEE 802.11); a password is empty (open network) or 8-64 bytes; neither may
  hold a NUL (device firmware copies them into C strings);
- secrets (token secret, assembled token, password, payload) are `SecretStr`: their repr and str are masked,
  and no error message here ever contains them.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from pydantic import SecretStr

BLE_TOKEN_START = 2
BLE_TOKEN_LENGTH = 8
SSID_MAX_BYTES = 32
PASSWORD_MIN_BYTES = 8
PASSWORD_MAX_BYTES = 64


class InvalidCredentials(ValueError):
    """Bad Wi-Fi credentials or token parts. The message names the field, never its value."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A token as Tuya issued it. Only `region` and `token` may be stored; `secret` lives in memory only."""

    region: str
    token: str
    secret: SecretStr

    def assembled(self) -> SecretStr:
        if not self.region or not self.token:
            raise InvalidCredentials("token", "Tuya returned an empty region or token")
        return SecretStr(self.region + self.token + self.secret.get_secret_value())


def ble_token(assembled: SecretStr) -> SecretStr:
    """The 8 characters Tuya's BLE SDK expects: `substringWithRange(2, 8)` of the assembled token."""
    value = assembled.get_secret_value()
    if len(value) < BLE_TOKEN_START + BLE_TOKEN_LENGTH:
        raise InvalidCredentials("token", "too short for a BLE token (needs 10 characters)")
    return SecretStr(value[BLE_TOKEN_START : BLE_TOKEN_START + BLE_TOKEN_LENGTH])


def _check_text(field: str, value: str, min_bytes: int, max_bytes: int, *, allow_empty: bool) -> None:
    size = len(value.encode("utf-8", "surrogatepass"))
    if "\x00" in value:
        raise InvalidCredentials(field, "must not contain NUL characters")
    if any(0xD800 <= ord(ch) <= 0xDFFF for ch in value):
        raise InvalidCredentials(field, "must be valid Unicode (lone surrogate)")
    if size == 0 and allow_empty:
        return
    if not min_bytes <= size <= max_bytes:
        raise InvalidCredentials(field, f"must be {min_bytes}-{max_bytes} bytes of UTF-8, got {size}")


@dataclass(frozen=True, slots=True)
class WifiCredentials:
    ssid: str
    password: SecretStr

    def __post_init__(self) -> None:
        _check_text("ssid", self.ssid, 1, SSID_MAX_BYTES, allow_empty=False)
        _check_text(
            "password",
            self.password.get_secret_value(),
            PASSWORD_MIN_BYTES,
            PASSWORD_MAX_BYTES,
            allow_empty=True,
        )

    def __repr__(self) -> str:
        return f"WifiCredentials(ssid={self.ssid!r}, password=SecretStr('**********'))"


def qr_payload(wifi: WifiCredentials, assembled: SecretStr) -> SecretStr:
    """The string a camera reads from the QR code: `{"s":ssid,"p":password,"t":token}` (compact, UTF-8)."""
    document = {"s": wifi.ssid, "p": wifi.password.get_secret_value(), "t": assembled.get_secret_value()}
    return SecretStr(orjson.dumps(document).decode("utf-8"))
