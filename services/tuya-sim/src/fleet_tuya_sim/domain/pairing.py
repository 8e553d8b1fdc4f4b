"""Pairing tokens (REFERENCE §5): issued per home for an owner, assembled as `region + token + secret`,
valid for their lifetime and void once the allowed number of devices has paired."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TOKEN_LEN = 8
SECRET_LEN = 4
REGION_CODE_LEN = 2

# Pairing region code per data centre (the `region` of the token result).
PAIRING_REGION = {"cn": "AY", "us": "AZ", "us-e": "UE", "eu": "EU", "eu-w": "WE", "in": "IN", "sg": "SG"}
DATA_CENTRE = {code: dc for dc, code in PAIRING_REGION.items()}

# Per-device failure codes in the token result (`failed[].code`). Tuya documents no list; the simulator uses
# the OpenAPI codes of the same meaning so callers can reuse one table.
FAIL_TOKEN_EXPIRED = ("1010", "token expired")
FAIL_TOKEN_SPENT = ("1012", "token status invalid: already used")
# A strongly bound device paired by another account: pairing code 113, "bound in the cloud" (the app shows
# "bound to another account"), as Tuya's SDKs report it.
FAIL_STRONG_BOUND = ("113", "The specified device has been bound in the cloud.")


@dataclass
class PairingToken:
    token: str
    secret: str = field(repr=False)  # part of the assembled token: never logged
    region: str  # pairing region code (AY, EU, AZ, ...)
    uid: str
    home_id: str
    pairing_type: str
    time_zone_id: str
    created_ms: int
    expire_ms: int
    max_devices: int = 1
    device_uuid: str | None = None  # a BLE token's device (`extension.uuid`)
    success: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)

    @property
    def assembled(self) -> str:
        return self.region + self.token + self.secret

    @property
    def lifetime_s(self) -> int:
        return (self.expire_ms - self.created_ms) // 1000

    def expired(self, now_ms: int) -> bool:
        return now_ms >= self.expire_ms

    @property
    def spent(self) -> bool:
        return len(self.success) >= self.max_devices

    def record_failure(self, device_id: str | None, name: str | None, code: str, msg: str) -> None:
        self.failed.append({"device_id": device_id, "name": name, "code": code, "msg": msg})

    def result(self) -> dict[str, Any]:
        """`GET /v1.0/device/paring/tokens/{token}`."""
        return {"success": list(self.success), "failed": list(self.failed)}


def split_assembled(assembled: str) -> tuple[str, str, str] | None:
    """(region, token, secret) of an assembled token, or None if it cannot be one."""
    if len(assembled) != REGION_CODE_LEN + TOKEN_LEN + SECRET_LEN:
        return None
    region = assembled[:REGION_CODE_LEN]
    token = assembled[REGION_CODE_LEN : REGION_CODE_LEN + TOKEN_LEN]
    secret = assembled[REGION_CODE_LEN + TOKEN_LEN :]
    return region, token, secret
