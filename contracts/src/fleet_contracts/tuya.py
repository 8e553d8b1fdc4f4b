"""Tuya's own vocabularies, defined once for every package (REFERENCE §3, §6, §7): DP types, push-message
protocols, upgrade channels, upgrade statuses and upgrade types.

They live in `fleet_contracts` because it is the one package everything may import, a pure `domain/`
included: it needs only pydantic, while `fleet_shared.tuya` brings the OpenAPI client (httpx) with it.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class DpType(StrEnum):
    """A DP's type, valued as Tuya's specification API names it (after normalisation: `parse`)."""

    BOOLEAN = "Boolean"
    INTEGER = "Integer"
    ENUM = "Enum"
    STRING = "String"
    JSON = "Json"
    RAW = "Raw"
    BITMAP = "Bitmap"

    @property
    def device_name(self) -> str:
        """The name in a product's DP schema and the device protocol: bool, value, enum, bitmap, ..."""
        return _DEVICE_NAMES[self]

    @classmethod
    def parse(cls, name: str) -> DpType | None:
        """Any spelling Tuya's APIs use (`Boolean`, `bool`, `value`, `Integer`, `fault`, ...), else None."""
        return _ALIASES.get(name.strip().lower())


_DEVICE_NAMES = {
    DpType.BOOLEAN: "bool",
    DpType.INTEGER: "value",
    DpType.ENUM: "enum",
    DpType.STRING: "string",
    DpType.JSON: "json",
    DpType.RAW: "raw",
    DpType.BITMAP: "bitmap",
}

_ALIASES = {
    **{t.value.lower(): t for t in DpType},
    **{name: t for t, name in _DEVICE_NAMES.items()},
    "int": DpType.INTEGER,
    "str": DpType.STRING,
    "fault": DpType.BITMAP,  # a bitmap of fault flags
}


class PushProtocol(IntEnum):
    """The `protocol` of a push message: the legacy family (4, 20) and the IoT Core family (1000-1002)."""

    STATUS = 4  # legacy DP status report
    LEGACY = 20  # legacy device events by bizCode (online, bindUser, upgradeStatus, ...)
    DEVICE_REPORT = 1000  # IoT Core property / event reports
    DEVICE_MANAGEMENT = 1001  # IoT Core online, offline, bind, unbind, rename
    OTA = 1002  # IoT Core upgrade progress


# Upgrade channels (Tuya `type` / `channel` / `moduleType`): 0 the main network module, 9 the MCU, 10 and
# above extension modules. Open-ended, so constants rather than an enum.
CHANNEL_MODULE = 0
CHANNEL_MCU = 9
FIRST_EXTENSION_CHANNEL = 10


def channel_name(channel: int) -> str:
    return {CHANNEL_MODULE: "main module", CHANNEL_MCU: "mcu"}.get(channel, f"extension {channel}")


class OtaUpgradeStatus(IntEnum):
    """Tuya's upgrade status codes (REFERENCE.md section 7)."""

    NO_UPDATE = 0
    READY = 1
    UPGRADING = 2
    DONE = 3
    FAILED = 4
    WAITING_FOR_WAKE_UP = 5
    TIMED_OUT = 7


class UpgradeType(IntEnum):
    """How the app presents the upgrade (Tuya `upgrade_type`)."""

    REMINDER = 0
    SILENT = 1
    FORCED = 2
    CHECK = 3
