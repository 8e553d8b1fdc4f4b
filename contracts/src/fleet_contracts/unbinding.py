"""Governed batch unbinding of strongly bound devices (after-sales returns). Keyed by batch id.

Vocabulary from Tuya's batch-unbinding guide: modes list / QR code / wired; a QR code serves at most 30
devices; refusals: unauthorized account, quota exceeded (per operator account and per product per day),
expired QR, QR full (the 31st device), device offline, not bound, cancelled, Tuya error with its code.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, ClassVar, Literal, Self

from pydantic import Field, model_validator

from fleet_contracts._base import (
    BatchId,
    DeviceId,
    OperatorId,
    Payload,
    ProductId,
    Reason,
    TuyaErrorCode,
)
from fleet_contracts.envelope import Envelope

MAX_DEVICES_PER_QR = 30
MAX_DEVICES_PER_BATCH = 1000


class UnbindMode(StrEnum):
    LIST = "list"
    QR = "qr"
    WIRED = "wired"


class RefusalCause(StrEnum):
    UNAUTHORIZED = "unauthorized"
    QUOTA_EXCEEDED = "quota_exceeded"
    QR_EXPIRED = "qr_expired"
    QR_FULL = "qr_full"
    DEVICE_OFFLINE = "device_offline"
    NOT_BOUND = "not_bound"
    CANCELLED = "cancelled"
    TUYA_ERROR = "tuya_error"


class BatchFact(Payload):
    subject_field: ClassVar[str] = "batch_id"

    batch_id: BatchId


class _BatchRequest(BatchFact):
    operator_id: OperatorId
    mode: UnbindMode
    product_id: ProductId | None = Field(
        default=None,
        description="Product the batch is for, when the operator names one (QR and wired modes).",
    )
    device_ids: list[DeviceId] = Field(
        default_factory=list,
        max_length=MAX_DEVICES_PER_BATCH,
        description="Devices to unbind: required in list mode; QR and wired modes discover them as they go.",
    )
    reason: Reason | None = None
    reset: bool = Field(
        default=False, description="Unbind and factory-reset (`POST /v2.0/cloud/thing/{id}/reset`)."
    )
    gateway_id: DeviceId | None = Field(
        default=None,
        description="Wired mode: the gateway the operator's LAN scan found the devices through (proof of "
        "presence).",
    )

    @model_validator(mode="after")
    def _devices_fit_mode(self) -> Self:
        if self.mode is UnbindMode.LIST and not self.device_ids:
            raise ValueError("list mode needs at least one device id")
        if self.mode is UnbindMode.WIRED and (not self.device_ids or self.gateway_id is None):
            raise ValueError("wired mode needs the devices the LAN scan found and the gateway_id")
        if self.mode is UnbindMode.QR and len(self.device_ids) > MAX_DEVICES_PER_QR:
            raise ValueError(f"a QR session unbinds at most {MAX_DEVICES_PER_QR} devices")
        if len(set(self.device_ids)) != len(self.device_ids):
            raise ValueError("device ids must be unique")
        return self


class RequestUnbindBatch(_BatchRequest):
    """Command: unbind these devices (or those that show up on this QR session / LAN) for this operator."""


class UnbindBatchRequested(_BatchRequest):
    """The batch was accepted for processing."""


class BatchDeviceUnbound(BatchFact):
    """One device of the batch was unbound from its previous owner."""

    device_id: DeviceId
    product_id: ProductId | None = None
    operator_id: OperatorId


class BatchDeviceRefused(BatchFact):
    """One device of the batch was not unbound, with the cause."""

    device_id: DeviceId
    product_id: ProductId | None = None
    operator_id: OperatorId
    cause: RefusalCause
    tuya_error_code: TuyaErrorCode | None = Field(
        default=None, description="Set exactly when cause is tuya_error."
    )
    detail: str | None = Field(default=None, max_length=1024)

    @model_validator(mode="after")
    def _code_with_tuya_error(self) -> Self:
        if (self.cause is RefusalCause.TUYA_ERROR) != (self.tuya_error_code is not None):
            raise ValueError("tuya_error_code is required for cause tuya_error and only then")
        return self


class UnbindBatchFinished(BatchFact):
    """Every device of the batch has a result."""

    operator_id: OperatorId
    devices_total: int = Field(ge=0)
    unbound: int = Field(ge=0)
    refused: int = Field(ge=0)
    refused_by_cause: dict[RefusalCause, int] = Field(default_factory=dict, description="Refusals per cause.")

    @model_validator(mode="after")
    def _counts_add_up(self) -> Self:
        if self.unbound + self.refused != self.devices_total:
            raise ValueError("unbound + refused must equal devices_total")
        if any(n < 0 for n in self.refused_by_cause.values()) or (
            self.refused_by_cause and sum(self.refused_by_cause.values()) != self.refused
        ):
            raise ValueError("refused_by_cause must add up to refused")
        return self


class RequestUnbindBatchCommand(Envelope[RequestUnbindBatch]):
    type: Literal["unbinding.batch.request.v1"] = "unbinding.batch.request.v1"


class UnbindBatchRequestedEvent(Envelope[UnbindBatchRequested]):
    type: Literal["unbinding.batch.requested.v1"] = "unbinding.batch.requested.v1"


class BatchDeviceUnboundEvent(Envelope[BatchDeviceUnbound]):
    type: Literal["unbinding.device.unbound.v1"] = "unbinding.device.unbound.v1"


class BatchDeviceRefusedEvent(Envelope[BatchDeviceRefused]):
    type: Literal["unbinding.device.refused.v1"] = "unbinding.device.refused.v1"


class UnbindBatchFinishedEvent(Envelope[UnbindBatchFinished]):
    type: Literal["unbinding.batch.finished.v1"] = "unbinding.batch.finished.v1"


UnbindingCommand = Annotated[RequestUnbindBatchCommand, Field(discriminator="type")]
UnbindingEvent = Annotated[
    UnbindBatchRequestedEvent | BatchDeviceUnboundEvent | BatchDeviceRefusedEvent | UnbindBatchFinishedEvent,
    Field(discriminator="type"),
]
