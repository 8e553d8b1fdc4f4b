"""Typed OpenAPI results (REFERENCE §4-7). Secrets (tokens, local keys, pairing secrets) are `SecretStr`:
they never show in repr, str or a default `model_dump(mode="json")`."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, JsonValue, SecretStr, model_validator

from fleet_contracts.tuya import DpType
from fleet_shared.tuya.strict_json import StrictJsonError, loads


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


# ---------------------------------------------------------------------------------------------------
# Token
# ---------------------------------------------------------------------------------------------------


class TokenInfo(_Model):
    access_token: SecretStr
    refresh_token: SecretStr
    # seconds; older docs name it `expire`
    expire_time: int = Field(validation_alias=AliasChoices("expire_time", "expire"))
    uid: str | None = None


# ---------------------------------------------------------------------------------------------------
# Devices
# ---------------------------------------------------------------------------------------------------


class DpStatus(_Model):
    code: str
    value: JsonValue = None


class DeviceDetails(_Model):
    """`GET /v1.0/devices/{id}` (and the items of `GET /v1.0/users/{uid}/devices`)."""

    id: str
    uuid: str | None = None
    uid: str | None = None
    biz_type: int | None = None
    name: str | None = None
    time_zone: str | None = None
    ip: str | None = None
    local_key: SecretStr | None = None
    sub: bool | None = None
    model: str | None = None
    create_time: int | None = None
    update_time: int | None = None
    active_time: int | None = None  # epoch seconds
    status: list[DpStatus] = Field(default_factory=list)
    owner_id: str | None = None  # the home
    product_id: str | None = None
    product_name: str | None = None
    category: str | None = None
    icon: str | None = None
    online: bool | None = None
    node_id: str | None = None
    lat: str | float | None = None
    lon: str | float | None = None


class ThingDetails(_Model):
    """`GET /v2.0/cloud/thing/{id}`: `is_online`, no status, no uid."""

    id: str
    uuid: str | None = None
    name: str | None = None
    custom_name: str | None = None
    category: str | None = None
    product_id: str | None = None
    product_name: str | None = None
    icon: str | None = None
    ip: str | None = None
    local_key: SecretStr | None = None
    sub: bool | None = None
    time_zone: str | None = None
    active_time: int | None = None
    create_time: int | None = None
    update_time: int | None = None
    is_online: bool | None = None
    lat: str | float | None = None
    lon: str | float | None = None

    @property
    def online(self) -> bool | None:
        return self.is_online


class DeviceStatusBatchItem(_Model):
    id: str
    status: list[DpStatus] = Field(default_factory=list)


# ---------------------------------------------------------------------------------------------------
# DP schema (specifications / functions); DpType is Tuya's vocabulary from fleet_contracts.tuya
# ---------------------------------------------------------------------------------------------------


def normalise_dp_type(name: str) -> DpType | None:
    return DpType.parse(name)


class IntegerValues(_Model):
    type: Literal["Integer"] = "Integer"
    min: int | None = None
    max: int | None = None
    scale: int = 0
    step: int | None = None
    unit: str | None = None

    def to_real(self, raw: int) -> float:
        """The real value: raw / 10^scale."""
        return float(raw) / float(10**self.scale)


class EnumValues(_Model):
    type: Literal["Enum"] = "Enum"
    range: list[str] = Field(default_factory=list)


class StringValues(_Model):
    type: Literal["String"] = "String"
    maxlen: int | None = None


class BitmapValues(_Model):
    type: Literal["Bitmap"] = "Bitmap"
    label: list[str] = Field(default_factory=list)
    maxlen: int | None = None


class BooleanValues(_Model):
    type: Literal["Boolean"] = "Boolean"


class RawValues(_Model):
    type: Literal["Raw"] = "Raw"
    maxlen: int | None = None


class JsonValues(_Model):
    type: Literal["Json"] = "Json"


DpValues = Annotated[
    IntegerValues | EnumValues | StringValues | BitmapValues | BooleanValues | RawValues | JsonValues,
    Field(discriminator="type"),
]


class DpSpec(_Model):
    """One function/status entry. `values` arrives as a JSON string and is parsed per `type`; an unknown type
    keeps `type=None` and the raw text in `values_raw`."""

    code: str
    dp_id: int | None = Field(None, validation_alias=AliasChoices("dp_id", "dpId"))
    type: DpType | None = None
    type_raw: str = ""
    name: str | None = None
    desc: str | None = None
    values: DpValues | None = None
    values_raw: str = ""

    @model_validator(mode="before")
    @classmethod
    def _parse_values(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        type_raw = str(data.get("type") or "")
        raw_values = data.get("values")
        values_text = raw_values if isinstance(raw_values, str) else ""
        parsed: Any = raw_values if isinstance(raw_values, dict) else {}
        if values_text:
            try:
                parsed = loads(values_text)
            except StrictJsonError:
                parsed = {}
        if not isinstance(parsed, dict):
            parsed = {}
        dp_type = normalise_dp_type(type_raw)
        data["type_raw"] = type_raw
        data["type"] = dp_type
        data["values_raw"] = values_text
        data["values"] = {**parsed, "type": dp_type.value} if dp_type is not None else None
        return data


class DeviceSpecification(_Model):
    """`GET /v1.x/devices/{id}/specifications`."""

    category: str | None = None
    functions: list[DpSpec] = Field(default_factory=list)
    status: list[DpSpec] = Field(default_factory=list)


class DeviceFunctions(_Model):
    """`GET /v1.0/devices/{id}/functions`."""

    category: str | None = None
    functions: list[DpSpec] = Field(default_factory=list)


# ---------------------------------------------------------------------------------------------------
# Logs
# ---------------------------------------------------------------------------------------------------


class DeviceLogEntry(_Model):
    model_config = ConfigDict(frozen=True, extra="allow", populate_by_name=True)

    code: str | None = None
    value: JsonValue = None
    event_time: int | None = None
    event_id: int | None = None
    event_from: str | None = None
    status: str | None = None


class DeviceLogPage(_Model):
    device_id: str | None = None
    logs: list[DeviceLogEntry] = Field(default_factory=list)
    has_next: bool = Field(False, validation_alias=AliasChoices("has_next", "has_more"))
    next_row_key: str | None = Field(
        None, validation_alias=AliasChoices("next_row_key", "last_row_key", "current_row_key")
    )
    total: int | None = None


# ---------------------------------------------------------------------------------------------------
# Pairing
# ---------------------------------------------------------------------------------------------------


class PairingType(StrEnum):
    EZ = "EZ"
    AP = "AP"
    BLE = "BLE"


class PairingExtension(_Model):
    encrypt_key: SecretStr | None = None
    random: str | None = None


class PairingToken(_Model):
    """`POST /v1.0/device/paring/token` result. The assembled token (`region + token + secret`) is only
    available through `assembled_token()`; `secret` never shows in repr or logs."""

    region: str
    token: str
    secret: SecretStr
    expire_time: int | None = None  # seconds; trust the returned value (300 vs 10 min conflict)
    extension: PairingExtension | None = None

    def assembled_token(self) -> str:
        """The token a device/app SDK needs. Handle like a password: never store or log it."""
        return self.region + self.token + self.secret.get_secret_value()


class PairedDevice(_Model):
    device_id: str
    product_id: str | None = None
    category: str | None = None
    name: str | None = None
    uuid: str | None = None
    online: bool | None = None


class PairingFailure(_Model):
    device_id: str | None = None
    name: str | None = None
    code: str | None = None
    msg: str | None = None


def _first(item: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if item.get(key) is not None:
            return item[key]
    return None


class PairingResult(_Model):
    """Pairing token result in one shape, whichever API answered (REFERENCE §5): `success/failed`,
    `success_devices/error_devices`, or camelCase `successDevices/errorDevices`."""

    success: list[PairedDevice] = Field(default_factory=list)
    failed: list[PairingFailure] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _normalise(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        ok = _first(data, "success", "success_devices", "successDevices") or []
        bad = _first(data, "failed", "error_devices", "errorDevices") or []
        success = [
            {
                "device_id": _first(d, "device_id", "id", "devId", "deviceId"),
                "product_id": _first(d, "product_id", "productId"),
                "category": d.get("category"),
                "name": d.get("name"),
                "uuid": d.get("uuid"),
                "online": d.get("online"),
            }
            for d in ok
            if isinstance(d, dict)
        ]
        failed = [
            {
                "device_id": _first(d, "device_id", "id", "devId", "deviceId"),
                "name": d.get("name"),
                "code": _str_or_none(_first(d, "code", "error_code", "errorCode")),
                "msg": _first(d, "msg", "error_msg", "errorMsg"),
            }
            for d in bad
            if isinstance(d, dict)
        ]
        return {"success": success, "failed": failed}


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


# ---------------------------------------------------------------------------------------------------
# Firmware / OTA
# ---------------------------------------------------------------------------------------------------


class FirmwareInfo(_Model):
    """One entry of `GET /v2.0/cloud/thing/{id}/firmware`. The channel comes as `type` or `channel`."""

    channel: int = Field(validation_alias=AliasChoices("type", "channel"))
    upgrade_status: int | None = None  # 0 none, 1 ready, 2 updating, 3 done, 4 failed, 7 timed out
    current_version: str | None = None
    version: str | None = None  # target
    desc: str | None = None
    type_desc: str | None = None
    dev_type: int | None = None  # 0 normal, 1 non-keep-alive
    timeout: int | None = None
    upgrade_type: int | None = None
    url: str | None = None
    md5: str | None = None
    sign: str | None = None
    file_size: int | str | None = None
    last_upgrade_time: int | None = None
    firmware_deploy_time: int | None = None
    control_type: int | None = None
    can_upgrade: bool | None = None
    remind: JsonValue = None


class UpgradeProgress(_Model):
    progress: int | None = None
    upgrade_status: int | None = None  # 2 updating, 3 done, 4 failed, 7 timed out
