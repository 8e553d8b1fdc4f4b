"""The firmware catalog: one immutable entry per product, upgrade channel and version.

Rules (Tuya's platform FAQ and App SDK docs):
- Channels: 0 main module (Wi-Fi/BLE), 1 Bluetooth, 3 Zigbee, 9 MCU, 10-19 extensions.
- Versions are dotted numbers compared numerically, part by part; missing parts count as 0 (`1.2` == `1.2.0`,
  `1.10` > `1.9`).
- An entry is immutable once registered ("a firmware set cannot be edited, only removed and republished"):
  registering the same product, channel and version again with the same content is a no-op, with different
  content it is refused.
- Withdrawal is refused while a release of the firmware is active (stop the release first, or devices would be
  told to fetch a file that is gone).
- Per-packet timeout: a packet unanswered for that long fails the upgrade (Tuya resets the timer per packet).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime

from fleet_contracts.ota import UpgradeType

MODULE, BLUETOOTH, ZIGBEE, MCU = 0, 1, 3, 9
EXTENSIONS = range(10, 20)
CHANNELS = frozenset({MODULE, BLUETOOTH, ZIGBEE, MCU, *EXTENSIONS})

_VERSION = re.compile(r"^\d{1,5}(\.\d{1,5}){0,5}$")
_MD5 = re.compile(r"^[0-9a-f]{32}$")
MAX_SIZE_BYTES = 1 << 31
PACKET_TIMEOUT_S = range(10, 3601)  # Tuya's firmware editor accepts seconds in this range


class CatalogError(ValueError):
    """A catalog request breaks a rule; nothing was changed."""


Version = tuple[int, ...]


def parse_version(text: str) -> Version:
    """`1.2.10` -> (1, 2, 10), trailing zeros dropped so equal versions compare equal."""
    if not _VERSION.match(text):
        raise CatalogError(f"version {text!r} is not dotted numbers (e.g. 1.2.3)")
    parts = [int(p) for p in text.split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def sort_key(text: str) -> str:
    """A string that sorts like the version (`1.10` after `1.9`): lets a database compare versions."""
    parts = list(parse_version(text)) + [0] * (6 - len(parse_version(text)))
    return ".".join(f"{p:05d}" for p in parts)


def is_lower(current: str, target: str) -> bool:
    """Whether `current` is an older version than `target` (both dotted)."""
    return parse_version(current) < parse_version(target)


def at_least(reported: str, target: str) -> bool:
    return parse_version(reported) >= parse_version(target)


@dataclass(frozen=True, slots=True)
class FirmwareSpec:
    """What an operator registers."""

    product_id: str
    channel: int
    version: str
    size_bytes: int
    md5: str
    signature: str
    url: str
    upgrade_type: UpgradeType
    packet_timeout_s: int

    def problems(self) -> list[str]:
        found: list[str] = []
        if self.channel not in CHANNELS:
            found.append(f"channel {self.channel} is not 0, 1, 3, 9 or 10-19")
        if not _VERSION.match(self.version):
            found.append(f"version {self.version!r} is not dotted numbers")
        if not 0 < self.size_bytes <= MAX_SIZE_BYTES:
            found.append("size must be between 1 byte and 2 GiB")
        if not _MD5.match(self.md5):
            found.append("md5 must be 32 lower-case hex digits")
        if not 0 < len(self.signature) <= 512:
            found.append("signature must be 1-512 characters")
        if not self.url.startswith("https://") or len(self.url) > 2048:
            found.append("url must be an https URL of at most 2048 characters")
        if self.packet_timeout_s not in PACKET_TIMEOUT_S:
            found.append("packet timeout must be 10-3600 seconds")
        if not self.product_id or len(self.product_id) > 64:
            found.append("product id must be 1-64 characters")
        return found


def validate(spec: FirmwareSpec) -> None:
    if problems := spec.problems():
        raise CatalogError("; ".join(problems))


def firmware_id(product_id: str, channel: int, version: str) -> str:
    """Deterministic, so a repeated registration finds the first one (idempotent)."""
    return f"{product_id}:{channel}:{'.'.join(map(str, parse_version(version)))}"


@dataclass(frozen=True, slots=True)
class Firmware:
    firmware_id: str
    spec: FirmwareSpec
    registered_at: datetime
    registered_by: str
    withdrawn_at: datetime | None = None

    @property
    def withdrawn(self) -> bool:
        return self.withdrawn_at is not None


@dataclass(frozen=True, slots=True)
class Registered:
    firmware: Firmware
    new: bool  # False: the same registration was seen before, no event


def register(spec: FirmwareSpec, existing: Firmware | None, *, by: str, now: datetime) -> Registered:
    """Register `spec`; `existing` is the entry already stored under its id, if any."""
    validate(spec)
    if existing is not None:
        if existing.spec != spec or existing.withdrawn:
            raise CatalogError(
                f"firmware {existing.firmware_id} is already registered with other content or withdrawn: "
                "firmware is immutable, register a new version"
            )
        return Registered(existing, new=False)
    fid = firmware_id(spec.product_id, spec.channel, spec.version)
    return Registered(Firmware(fid, spec, now, by), new=True)


def withdraw(firmware: Firmware, *, active_releases: int, now: datetime) -> Firmware:
    if active_releases:
        raise CatalogError(
            f"firmware {firmware.firmware_id} has {active_releases} active release(s): stop them first"
        )
    if firmware.withdrawn:
        return firmware
    return replace(firmware, withdrawn_at=now)
