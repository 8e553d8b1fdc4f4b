"""Device shadow changes published by `status`: only real changes, never echoes of late or duplicate reports.

Topics: `topics.STATUS_SHADOW_EVENTS` and `topics.STATUS_PRESENCE_EVENTS`, both keyed by device id.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from fleet_contracts._base import (
    Contract,
    DeviceId,
    DeviceTimeMillis,
    DpCode,
    DpId,
    DpValue,
    Payload,
    ProductId,
)
from fleet_contracts.envelope import Envelope


class DpSample(Contract):
    """A DP value with the device timestamp it was reported at."""

    value: DpValue
    device_time_ms: DeviceTimeMillis


class DpChange(Contract):
    """One data point whose shadow value changed."""

    code: DpCode
    dp_id: DpId | None = None
    old: DpSample | None = Field(
        default=None, description="Previous shadow value; absent for a first report."
    )
    new: DpSample


class ShadowChanged(Payload):
    """The device shadow changed: only the DPs whose value changed are listed."""

    subject_field: ClassVar[str] = "device_id"

    device_id: DeviceId
    product_id: ProductId | None = None
    shadow_version: int = Field(
        ge=1, description="Shadow version after the change; increases by one per change, per device."
    )
    changes: list[DpChange] = Field(min_length=1, max_length=255)


class PresenceChanged(Payload):
    """The device went online or offline (as ordered by device time; repeated reports are not changes)."""

    subject_field: ClassVar[str] = "device_id"

    device_id: DeviceId
    product_id: ProductId | None = None
    online: bool = Field(description="Presence after the change.")
    changed_at_ms: DeviceTimeMillis = Field(description="Device time of the online/offline report.")
    last_seen_ms: DeviceTimeMillis | None = Field(
        default=None, description="Latest device time seen from the device (any report)."
    )
    cause: Literal["reported", "inactivity", "report"] | None = Field(
        default=None,
        description=(
            "Why: `reported`, the device's online/offline message; `inactivity`, silent for longer than "
            "its inactivity timeout (offline, `changed_at_ms` is when the timeout ran out); `report`, back "
            "online with a report after inactivity. Absent from producers that predate it."
        ),
    )


class ShadowChangedEvent(Envelope[ShadowChanged]):
    type: Literal["status.shadow.changed.v1"] = "status.shadow.changed.v1"


class PresenceChangedEvent(Envelope[PresenceChanged]):
    type: Literal["status.presence.changed.v1"] = "status.presence.changed.v1"


# One event type per topic today; kept as a discriminated union so adding a type is not a consumer change.
ShadowEvent = Annotated[ShadowChangedEvent, Field(discriminator="type")]
PresenceEvent = Annotated[PresenceChangedEvent, Field(discriminator="type")]
