"""Typed Tuya push messages (REFERENCE §3): protocol 4, 20 (every documented bizCode), 1000, 1001, 1002.

Dispatch is on `protocol` first (protocol 4 has no bizCode), then on `bizCode`. Unknown protocols and bizCodes
become `UnknownProtocolMessage` / `UnknownBizCodeMessage`, never dropped. Field names keep Tuya's spelling as
aliases; unknown keys are ignored (Tuya may add keys to any layer). Only the identifiers a consumer needs to
route a message are required; everything Tuya documents without types is optional and lenient.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError

from fleet_contracts.tuya import PushProtocol
from fleet_shared.tuya.errors import PushMessageRejected, RejectReason

# Tuya sends numbers as strings in places (`upgradeStatus: "2"`); lax mode coerces numeric strings to int.
Millis = int


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


class TuyaMessage(_Model):
    """Base of every typed push message."""

    kind: str
    protocol: int

    @property
    def device_id(self) -> str | None:
        """The device this message is about, if any (the partition key of the internal event)."""
        return None


# ----------------------------------------------------------------------------------------------------
# Protocol 4: device status report
# ----------------------------------------------------------------------------------------------------


class StatusItem(_Model):
    """One DP value; Tuya adds a key named after the numeric DP id holding the value as a string."""

    model_config = ConfigDict(frozen=True, extra="allow", populate_by_name=True)

    code: str
    value: JsonValue = None
    t: Millis | None = None

    @property
    def dp_id(self) -> int | None:
        for key in self.model_extra or {}:
            if key.isdigit():
                return int(key)
        return None


class StatusReport(TuyaMessage):
    kind: Literal["statusReport"] = "statusReport"
    data_id: str | None = Field(None, alias="dataId")
    dev_id: str = Field(alias="devId", min_length=1)
    product_key: str | None = Field(None, alias="productKey")
    status: list[StatusItem]

    @property
    def device_id(self) -> str | None:
        return self.dev_id


# ----------------------------------------------------------------------------------------------------
# Protocol 20: legacy device management (and user/home/room/scene events)
# ----------------------------------------------------------------------------------------------------


class BizMessage(TuyaMessage):
    """Messages carrying `bizCode` (protocols 20, 1000, 1001, 1002)."""

    biz_code: str = Field(alias="bizCode")
    ts: Millis | None = None


class LegacyBizMessage(BizMessage):
    """Protocol 20 shape: `{devId, productKey, bizCode, bizData, ts, uuid?}`."""

    biz_codes: ClassVar[tuple[str, ...]] = ()
    kind: str = "legacy"
    dev_id: str | None = Field(None, alias="devId")
    product_key: str | None = Field(None, alias="productKey")
    uuid: str | None = None

    @property
    def device_id(self) -> str | None:
        return self.dev_id


class _DeviceLegacyMessage(LegacyBizMessage):
    """Protocol 20 messages about one device: `devId` required."""

    dev_id: str = Field(alias="devId", min_length=1)


class PresenceData(_Model):
    time: Millis | None = None
    uid: str | None = None


class DeviceOnline(_DeviceLegacyMessage):
    biz_codes = ("online",)
    kind: Literal["online"] = "online"
    biz_data: PresenceData = Field(default_factory=PresenceData, alias="bizData")


class DeviceOffline(_DeviceLegacyMessage):
    biz_codes = ("offline",)
    kind: Literal["offline"] = "offline"
    biz_data: PresenceData = Field(default_factory=PresenceData, alias="bizData")


class NameUpdateData(_Model):
    dev_id: str | None = Field(None, alias="devId")
    uid: str | None = None
    name: str | None = None


class DeviceNameUpdate(_DeviceLegacyMessage):
    biz_codes = ("nameUpdate",)
    kind: Literal["nameUpdate"] = "nameUpdate"
    biz_data: NameUpdateData = Field(default_factory=NameUpdateData, alias="bizData")


class DpNameUpdateData(_Model):
    dev_id: str | None = Field(None, alias="devId")
    dp_id: int | str | None = Field(None, alias="dpId")
    name: str | None = None


class DpNameUpdate(_DeviceLegacyMessage):
    biz_codes = ("dpNameUpdate",)
    kind: Literal["dpNameUpdate"] = "dpNameUpdate"
    biz_data: DpNameUpdateData = Field(default_factory=DpNameUpdateData, alias="bizData")


class BindUserData(_Model):
    dev_id: str | None = Field(None, alias="devId")
    uid: str | None = None
    owner_id: str | None = Field(None, alias="ownerId")
    uuid: str | None = None
    # The pairing token (without its secret): links the activation to a pairing session.
    token: str | None = None


class DeviceBindUser(_DeviceLegacyMessage):
    biz_codes = ("bindUser",)
    kind: Literal["bindUser"] = "bindUser"
    biz_data: BindUserData = Field(default_factory=BindUserData, alias="bizData")


class DeleteData(_Model):
    dev_id: str | None = Field(None, alias="devId")
    uid: str | None = None
    owner_id: str | None = Field(None, alias="ownerId")


class DeviceDelete(_DeviceLegacyMessage):
    biz_codes = ("delete",)
    kind: Literal["delete"] = "delete"
    biz_data: DeleteData = Field(default_factory=DeleteData, alias="bizData")


class UpgradeStatusData(_Model):
    dev_id: str | None = Field(None, alias="devId")
    # Value meanings undocumented; probably the OTA upgrade_status codes (REFERENCE §7).
    upgrade_status: int | None = Field(None, alias="upgradeStatus")
    description: str | None = None
    module_type: int | None = Field(None, alias="moduleType")


class DeviceUpgradeStatus(_DeviceLegacyMessage):
    biz_codes = ("upgradeStatus",)
    kind: Literal["upgradeStatus"] = "upgradeStatus"
    biz_data: UpgradeStatusData = Field(default_factory=UpgradeStatusData, alias="bizData")


class ShareData(_Model):
    receiver: JsonValue = None
    share: JsonValue = None
    group_id: JsonValue = Field(None, alias="groupId")
    add_dev_ids: JsonValue = Field(None, alias="addDevIds")
    removed_dev_ids: JsonValue = Field(None, alias="removedDevIds")


class DeviceShare(LegacyBizMessage):
    biz_codes = ("share",)
    kind: Literal["share"] = "share"
    biz_data: ShareData = Field(default_factory=ShareData, alias="bizData")


class SignalReport(_Model):
    memory: int | None = None
    rssi: int | None = None
    t: Millis | None = None


class DeviceSignal(_DeviceLegacyMessage):
    biz_codes = ("deviceSignal",)
    kind: Literal["deviceSignal"] = "deviceSignal"
    report_data: list[SignalReport] = Field(default_factory=list, alias="reportData")


class DpCommand(_Model):
    dp_id: int | None = Field(None, alias="dpId")
    value: JsonValue = None


class DeviceDpCommand(_DeviceLegacyMessage):
    biz_codes = ("deviceDpCommand",)
    kind: Literal["deviceDpCommand"] = "deviceDpCommand"
    command: list[DpCommand] = Field(default_factory=list)


class UserData(_Model):
    uid: str | None = None
    schema_: str | None = Field(None, alias="schema")
    time: Millis | None = None


class UserEvent(LegacyBizMessage):
    biz_codes = ("userRegister", "userUpdate", "userDelete")
    kind: Literal["user"] = "user"
    biz_data: UserData = Field(default_factory=UserData, alias="bizData")


class HomeData(_Model):
    home_id: int | str | None = Field(None, alias="homeId")
    home_name: str | None = Field(None, alias="homeName")
    uid: str | None = None
    time: Millis | None = None
    lon: float | str | None = None
    lat: float | str | None = None
    member_ids: JsonValue = Field(None, alias="memberIds")
    devices: JsonValue = None
    reason: JsonValue = None


class HomeEvent(LegacyBizMessage):
    biz_codes = ("homeCreate", "homeUpdate", "homeDelete")
    kind: Literal["home"] = "home"
    biz_data: HomeData = Field(default_factory=HomeData, alias="bizData")


class RoomData(_Model):
    home_id: int | str | None = Field(None, alias="homeId")
    room_name: str | None = Field(None, alias="roomName")
    uid: str | None = None
    time: Millis | None = None
    rooms: JsonValue = None


class RoomEvent(LegacyBizMessage):
    biz_codes = ("roomCreate", "roomNameUpdate", "roomDelete", "roomSort")
    kind: Literal["room"] = "room"
    biz_data: RoomData = Field(default_factory=RoomData, alias="bizData")


class SceneAction(_Model):
    entity_id: str | None = Field(None, alias="entityId")
    exec_status: int | None = Field(None, alias="execStatus")
    execute_time: Millis | None = Field(None, alias="executeTime")
    id: str | None = None


class SceneExecute(LegacyBizMessage):
    biz_codes = ("sceneExecute",)
    kind: Literal["sceneExecute"] = "sceneExecute"
    gid: int | str | None = None
    uid: str | None = None
    actions: list[SceneAction] = Field(default_factory=list)


class AutomationExternalAction(LegacyBizMessage):
    biz_codes = ("automationExternalAction",)
    kind: Literal["automationExternalAction"] = "automationExternalAction"
    automation_id: str | None = Field(None, alias="automationId")


# ----------------------------------------------------------------------------------------------------
# IoT Core: protocols 1000, 1001, 1002 (`{bizCode, bizData, ts}`)
# ----------------------------------------------------------------------------------------------------


class IotCoreMessage(BizMessage):
    biz_codes: ClassVar[tuple[str, ...]] = ()
    kind: str = "iotCore"


class _DeviceBizData(_Model):
    """bizData of IoT Core device messages; `devId` required, undocumented keys kept in `model_extra`."""

    model_config = ConfigDict(frozen=True, extra="allow", populate_by_name=True)

    dev_id: str = Field(alias="devId", min_length=1)
    product_id: str | None = Field(None, alias="productId")


class _DeviceIotCoreMessage(IotCoreMessage):
    biz_data: _DeviceBizData = Field(alias="bizData")

    @property
    def device_id(self) -> str | None:
        return self.biz_data.dev_id


class PropertyItem(_Model):
    code: str
    dp_id: int | None = Field(None, alias="dpId")
    time: Millis | None = None
    value: JsonValue = None


class PropertyData(_DeviceBizData):
    data_id: str | None = Field(None, alias="dataId")
    properties: list[PropertyItem]


class DevicePropertyMessage(_DeviceIotCoreMessage):
    biz_codes = ("devicePropertyMessage",)
    kind: Literal["devicePropertyMessage"] = "devicePropertyMessage"
    biz_data: PropertyData = Field(alias="bizData")


class QueryPropertyData(_DeviceBizData):
    data_id: str | None = Field(None, alias="dataId")
    properties: list[PropertyItem] = Field(default_factory=list)


class DeviceQueryPropertyMessage(_DeviceIotCoreMessage):
    biz_codes = ("deviceQueryPropertyMessage",)
    kind: Literal["deviceQueryPropertyMessage"] = "deviceQueryPropertyMessage"
    biz_data: QueryPropertyData = Field(alias="bizData")


class EventData(_DeviceBizData):
    # Field layout not documented (3P suggests `outputParams`); everything else stays in model_extra.
    event_code: str | None = Field(None, alias="eventCode")
    output_params: JsonValue = Field(None, alias="outputParams")


class DeviceEventMessage(_DeviceIotCoreMessage):
    biz_codes = ("deviceEventMessage",)
    kind: Literal["deviceEventMessage"] = "deviceEventMessage"
    biz_data: EventData = Field(alias="bizData")


class DeviceActionResponseMessage(_DeviceIotCoreMessage):
    biz_codes = ("deviceActionResponseMessage",)
    kind: Literal["deviceActionResponseMessage"] = "deviceActionResponseMessage"


class PresenceIotData(_DeviceBizData):
    uid: str | None = None
    time: Millis | None = None  # observed in ms


class IotDeviceOnline(_DeviceIotCoreMessage):
    biz_codes = ("deviceOnline",)
    kind: Literal["deviceOnline"] = "deviceOnline"
    biz_data: PresenceIotData = Field(alias="bizData")


class IotDeviceOffline(_DeviceIotCoreMessage):
    biz_codes = ("deviceOffline",)
    kind: Literal["deviceOffline"] = "deviceOffline"
    biz_data: PresenceIotData = Field(alias="bizData")


class IotNameUpdateData(_DeviceBizData):
    uid: str | None = None
    name: str | None = None
    uuid: str | None = None


class IotDeviceNameUpdate(_DeviceIotCoreMessage):
    biz_codes = ("deviceNameUpdate",)
    kind: Literal["deviceNameUpdate"] = "deviceNameUpdate"
    biz_data: IotNameUpdateData = Field(alias="bizData")


class SpaceBindData(_DeviceBizData):
    uid: str | None = None
    space_id: int | str | None = Field(None, alias="spaceId")
    uuid: str | None = None
    token: str | None = None


class IotDeviceBindSpace(_DeviceIotCoreMessage):
    biz_codes = ("deviceBindSpace",)
    kind: Literal["deviceBindSpace"] = "deviceBindSpace"
    biz_data: SpaceBindData = Field(alias="bizData")


class IotDeviceUnbindSpace(_DeviceIotCoreMessage):
    biz_codes = ("deviceUnbindSpace",)
    kind: Literal["deviceUnbindSpace"] = "deviceUnbindSpace"
    biz_data: SpaceBindData = Field(alias="bizData")


class IotDeviceTransfer(_DeviceIotCoreMessage):
    biz_codes = ("deviceTransfer",)
    kind: Literal["deviceTransfer"] = "deviceTransfer"


class IotDeviceFreeze(_DeviceIotCoreMessage):
    biz_codes = ("deviceFreeze",)
    kind: Literal["deviceFreeze"] = "deviceFreeze"


class IotDeviceUnfreeze(_DeviceIotCoreMessage):
    biz_codes = ("deviceUnFreeze",)
    kind: Literal["deviceUnFreeze"] = "deviceUnFreeze"


class OtaProgressData(_DeviceBizData):
    # Layout undocumented: the likely keys are typed leniently, the rest stays in model_extra.
    progress: int | None = None
    upgrade_status: int | None = Field(None, alias="upgradeStatus")
    channel: int | None = None
    version: str | None = None


class IotDeviceOtaProgress(_DeviceIotCoreMessage):
    biz_codes = ("deviceOtaProgress",)
    kind: Literal["deviceOtaProgress"] = "deviceOtaProgress"
    biz_data: OtaProgressData = Field(alias="bizData")


# ----------------------------------------------------------------------------------------------------
# Unknown
# ----------------------------------------------------------------------------------------------------


def _dev_id_in(data: dict[str, JsonValue]) -> str | None:
    """`devId` where every documented shape puts it (REFERENCE §3): at the top (protocols 4 and 20) or in
    `bizData` (IoT Core); a non-empty string only."""
    for container in (data, data.get("bizData")):
        if isinstance(container, dict):
            dev_id = container.get("devId")
            if isinstance(dev_id, str) and dev_id:
                return dev_id
    return None


class UnknownProtocolMessage(TuyaMessage):
    """A protocol this library does not type (22, 25, 1010, ...): carried through with its decrypted data.

    Its device is `devId` at the top or in `bizData`, when the data has one there (so its event keeps the
    device's key and order); None otherwise."""

    kind: Literal["unknownProtocol"] = "unknownProtocol"
    data: dict[str, JsonValue]

    @property
    def device_id(self) -> str | None:
        return _dev_id_in(self.data)


class UnknownBizCodeMessage(TuyaMessage):
    """A known protocol with a bizCode this library does not type."""

    kind: Literal["unknownBizCode"] = "unknownBizCode"
    biz_code: str
    data: dict[str, JsonValue]

    @property
    def device_id(self) -> str | None:
        return _dev_id_in(self.data)


# ----------------------------------------------------------------------------------------------------
# Dispatch
# ----------------------------------------------------------------------------------------------------

PROTOCOL_STATUS = PushProtocol.STATUS
PROTOCOL_LEGACY = PushProtocol.LEGACY
PROTOCOL_DEVICE_REPORT = PushProtocol.DEVICE_REPORT
PROTOCOL_DEVICE_MANAGEMENT = PushProtocol.DEVICE_MANAGEMENT
PROTOCOL_OTA = PushProtocol.OTA

_LEGACY: tuple[type[LegacyBizMessage], ...] = (
    DeviceOnline,
    DeviceOffline,
    DeviceNameUpdate,
    DpNameUpdate,
    DeviceBindUser,
    DeviceDelete,
    DeviceUpgradeStatus,
    DeviceShare,
    DeviceSignal,
    DeviceDpCommand,
    UserEvent,
    HomeEvent,
    RoomEvent,
    SceneExecute,
    AutomationExternalAction,
)
_IOT_1000: tuple[type[IotCoreMessage], ...] = (
    DevicePropertyMessage,
    DeviceQueryPropertyMessage,
    DeviceEventMessage,
    DeviceActionResponseMessage,
)
_IOT_1001: tuple[type[IotCoreMessage], ...] = (
    IotDeviceOnline,
    IotDeviceOffline,
    IotDeviceNameUpdate,
    IotDeviceBindSpace,
    IotDeviceUnbindSpace,
    IotDeviceTransfer,
    IotDeviceFreeze,
    IotDeviceUnfreeze,
)
_IOT_1002: tuple[type[IotCoreMessage], ...] = (IotDeviceOtaProgress,)

BIZ_MODELS: dict[int, dict[str, type[BizMessage]]] = {
    PROTOCOL_LEGACY: {code: cls for cls in _LEGACY for code in cls.biz_codes},
    PROTOCOL_DEVICE_REPORT: {code: cls for cls in _IOT_1000 for code in cls.biz_codes},
    PROTOCOL_DEVICE_MANAGEMENT: {code: cls for cls in _IOT_1001 for code in cls.biz_codes},
    PROTOCOL_OTA: {code: cls for cls in _IOT_1002 for code in cls.biz_codes},
}


def _validation_summary(exc: ValidationError) -> str:
    # Locations and error types only: pydantic's default text would echo input values (plaintext).
    parts = [f"{'.'.join(str(p) for p in err['loc']) or '<root>'}:{err['type']}" for err in exc.errors()[:5]]
    return "; ".join(parts)


def parse_message(protocol: int, data: dict[str, Any]) -> TuyaMessage:
    """Types one decrypted payload. Raises `PushMessageRejected(payload)` when a known shape is violated."""
    # `kind` and `protocol` are ours; a payload key of the same name must not steer validation.
    fields = {k: v for k, v in data.items() if k not in ("kind", "protocol")}
    fields["protocol"] = protocol
    try:
        if protocol == PROTOCOL_STATUS:
            return StatusReport.model_validate(fields)
        models = BIZ_MODELS.get(protocol)
        if models is None:
            return UnknownProtocolMessage(protocol=protocol, data=data)
        biz_code = data.get("bizCode")
        if not isinstance(biz_code, str) or not biz_code:
            raise PushMessageRejected(RejectReason.PAYLOAD, f"protocol {protocol} payload without bizCode")
        model = models.get(biz_code)
        if model is None:
            return UnknownBizCodeMessage(protocol=protocol, biz_code=biz_code, data=data)
        return model.model_validate(fields)
    except ValidationError as exc:
        raise PushMessageRejected(
            RejectReason.PAYLOAD, f"protocol {protocol} schema: {_validation_summary(exc)}"
        ) from None
