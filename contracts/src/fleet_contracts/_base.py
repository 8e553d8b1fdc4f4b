"""Shared building blocks of every contract: the frozen base model and the field vocabulary.

The field types carry their own limits and descriptions so every contract says the same thing the same way
(Tuya's terms: devId -> device_id, productKey/productId -> product_id, uid -> owner_uid, ownerId/spaceId ->
home_id) and untrusted input is size-limited once, here.
"""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import BaseModel, ConfigDict, Field, JsonValue


class Contract(BaseModel):
    """Base of every payload we own: immutable, and unknown keys are an error rather than silently dropped."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Payload(Contract):
    """The `data` of an envelope.

    `subject_field` names the field whose value becomes the envelope `subject` and, through the topic
    registry, the Pulsar partition/ordering key (device id for device facts, batch id for unbinding, ...).
    """

    subject_field: ClassVar[str]


# Tuya identifiers: opaque strings. Limits are generous but bounded (untrusted input).
DeviceId = Annotated[str, Field(min_length=1, max_length=64, description="Tuya device id (`devId`).")]
ProductId = Annotated[
    str,
    Field(min_length=1, max_length=64, description="Tuya product id, the PID (`productKey` / `productId`)."),
]
OwnerUid = Annotated[
    str,
    Field(
        min_length=1, max_length=64, description="Tuya user id of the app account owning the device (`uid`)."
    ),
]
HomeId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        description="Tuya home id (legacy `ownerId`) or space id (IoT Core `spaceId`) the device belongs to.",
    ),
]
DpId = Annotated[
    int, Field(ge=1, le=255, description="Numeric data point id (`dpId`) from the product's DP schema.")
]
DpCode = Annotated[str, Field(min_length=1, max_length=64, description="Data point code, e.g. `switch_1`.")]
DpValue = Annotated[
    JsonValue,
    Field(description="DP value as reported (bool, number, enum string, bitmap int, string, JSON)."),
]
EpochMillis = Annotated[int, Field(ge=0, description="Milliseconds since the Unix epoch.")]
DeviceTimeMillis = Annotated[
    int, Field(ge=0, description="Device timestamp in ms since the Unix epoch; orders device data.")
]
TuyaErrorCode = Annotated[
    str,
    Field(min_length=1, max_length=32, description="Tuya error code as sent by Tuya, e.g. `2001`."),
]
OperatorId = Annotated[
    str, Field(min_length=1, max_length=128, description="Account of the operator who issued the command.")
]
Reason = Annotated[str, Field(min_length=1, max_length=1024, description="Human-readable reason.")]
Name = Annotated[str, Field(min_length=1, max_length=256, description="Display name.")]
BatchId = Annotated[str, Field(min_length=1, max_length=64, description="Unbinding batch id.")]
ReleaseId = Annotated[str, Field(min_length=1, max_length=64, description="Firmware release id.")]
FirmwareId = Annotated[str, Field(min_length=1, max_length=64, description="Firmware id in the catalog.")]
UpgradeChannel = Annotated[
    int,
    Field(
        ge=0,
        le=99,
        description="Upgrade channel (Tuya `type`/`channel`/`moduleType`): 0 module, 9 MCU, 10+ extensions.",
    ),
]
FirmwareVersion = Annotated[
    str, Field(min_length=1, max_length=32, description="Firmware version string, e.g. `1.2.3`.")
]
