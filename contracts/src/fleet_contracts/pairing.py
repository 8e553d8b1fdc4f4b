"""Pairing tokens, sessions and per-device outcomes, published by `pairing`. Keyed by the pairing token.

Never here: the token secret, the assembled token (`region + token + secret`), the Wi-Fi SSID or password.
The bare Tuya token is not a credential on its own and is what Tuya's `bindUser` message quotes back.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import AwareDatetime, Field

from fleet_contracts._base import (
    DeviceId,
    HomeId,
    Name,
    OwnerUid,
    Payload,
    ProductId,
    TuyaErrorCode,
)
from fleet_contracts.envelope import Envelope

PairingToken = Annotated[
    str, Field(min_length=1, max_length=64, description="Tuya pairing token (without region and secret).")
]


class PairingMode(StrEnum):
    EZ = "EZ"
    AP = "AP"
    QR = "QR"
    BLE = "BLE"
    COMBO = "combo"


class PairingSessionState(StrEnum):
    """Where a pairing session stands; every state but `active` is final."""

    ACTIVE = "active"
    SUCCEEDED = "succeeded"
    PARTIALLY_SUCCEEDED = "partially_succeeded"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


SessionId = Annotated[str, Field(min_length=1, max_length=64, description="Pairing session id.")]


class PairingFact(Payload):
    subject_field: ClassVar[str] = "token"

    token: PairingToken
    home_id: HomeId
    session_id: SessionId | None = Field(
        default=None, description="The pairing session the token belongs to."
    )


class PairingTokenIssued(PairingFact):
    """A pairing token was obtained from Tuya for a home."""

    owner_uid: OwnerUid
    mode: PairingMode
    tuya_region: str = Field(
        min_length=1, max_length=8, description="Region prefix Tuya returned with the token, e.g. `EU`, `AY`."
    )
    expires_at: AwareDatetime = Field(
        description="When the token stops being accepted (as returned by Tuya)."
    )
    max_devices: int = Field(ge=1, le=1000, description="Devices that may pair with it before it is void.")


class PairingTokenConsumed(PairingFact):
    """The token paired its last allowed device and is void."""

    paired_devices: int = Field(ge=1)


class PairingTokenExpired(PairingFact):
    """The token's lifetime ended."""

    paired_devices: int = Field(ge=0, description="Devices that paired with it before it expired.")


class DevicePaired(PairingFact):
    """A device activated with the token and is bound to the home."""

    device_id: DeviceId
    product_id: ProductId | None = None
    owner_uid: OwnerUid | None = None
    name: Name | None = None
    previous_owner_uid: OwnerUid | None = Field(
        default=None, description="Account the device was bound to before (medium/weak binding rebind)."
    )


class PairingFailed(PairingFact):
    """A device failed to pair with the token, with Tuya's error code."""

    device_id: DeviceId | None = Field(default=None, description="Device id if Tuya names one.")
    device_name: Name | None = None
    tuya_error_code: TuyaErrorCode
    tuya_error_message: str | None = Field(default=None, max_length=1024)
    cause: str | None = Field(
        default=None,
        max_length=64,
        description="Typed cause of Tuya's code, e.g. `wrong_wifi_password`, `bound_to_another_account`.",
    )
    hint: str | None = Field(default=None, max_length=1024, description="What to do about it, if anything.")


class PairingSessionEnded(PairingFact):
    """A pairing session reached its final state; its token is no longer honoured."""

    state: PairingSessionState
    paired_devices: int = Field(ge=0)
    failed_devices: int = Field(ge=0)
    unexpected_devices: int = Field(ge=0, description="Devices of a product outside the allow-list.")


class PreviousOwnerNotified(PairingFact):
    """A medium-bound device was rebound from another account; Tuya notifies that account."""

    device_id: DeviceId
    owner_uid: OwnerUid
    previous_owner_uid: OwnerUid


class UnexpectedProductPolicy(StrEnum):
    RECORD_ONLY = "record_only"
    REMOVE = "remove"


class UnexpectedProductPaired(PairingFact):
    """A device of a product outside the session's allow-list paired with the token."""

    device_id: DeviceId
    product_id: ProductId | None = None
    policy: UnexpectedProductPolicy = Field(description="`remove`: the device is removed again.")


class LateActivation(PairingFact):
    """A device activated with the token after the session ended (cancelled, expired or used up)."""

    device_id: DeviceId
    product_id: ProductId | None = None
    session_state: PairingSessionState


class PairingTokenIssuedEvent(Envelope[PairingTokenIssued]):
    type: Literal["pairing.token.issued.v1"] = "pairing.token.issued.v1"


class PairingTokenConsumedEvent(Envelope[PairingTokenConsumed]):
    type: Literal["pairing.token.consumed.v1"] = "pairing.token.consumed.v1"


class PairingTokenExpiredEvent(Envelope[PairingTokenExpired]):
    type: Literal["pairing.token.expired.v1"] = "pairing.token.expired.v1"


class DevicePairedEvent(Envelope[DevicePaired]):
    type: Literal["pairing.device.paired.v1"] = "pairing.device.paired.v1"


class PairingFailedEvent(Envelope[PairingFailed]):
    type: Literal["pairing.device.failed.v1"] = "pairing.device.failed.v1"


class PairingSessionEndedEvent(Envelope[PairingSessionEnded]):
    type: Literal["pairing.session.ended.v1"] = "pairing.session.ended.v1"


class PreviousOwnerNotifiedEvent(Envelope[PreviousOwnerNotified]):
    type: Literal["pairing.device.previous_owner_notified.v1"] = "pairing.device.previous_owner_notified.v1"


class UnexpectedProductPairedEvent(Envelope[UnexpectedProductPaired]):
    type: Literal["pairing.device.unexpected_product.v1"] = "pairing.device.unexpected_product.v1"


class LateActivationEvent(Envelope[LateActivation]):
    type: Literal["pairing.device.late_activation.v1"] = "pairing.device.late_activation.v1"


PairingEvent = Annotated[
    PairingTokenIssuedEvent
    | PairingTokenConsumedEvent
    | PairingTokenExpiredEvent
    | DevicePairedEvent
    | PairingFailedEvent
    | PairingSessionEndedEvent
    | PreviousOwnerNotifiedEvent
    | UnexpectedProductPairedEvent
    | LateActivationEvent,
    Field(discriminator="type"),
]
