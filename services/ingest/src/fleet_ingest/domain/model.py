"""What ingest works with: a delivery from Tuya's topic, the project it belongs to, and what to do with it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from fleet_contracts import topics
from fleet_contracts.envelope import Envelope


@dataclass(frozen=True, slots=True)
class Project:
    """The Tuya project (cloud project = Pulsar tenant) this ingest instance serves."""

    access_id: str
    region: str
    source: str = "/fleet/ingest"


@dataclass(frozen=True, slots=True)
class TuyaDelivery:
    """One message as received from Tuya's topic, independent of the Pulsar client."""

    payload: bytes = field(repr=False)
    properties: Mapping[str, str]
    message_id: str
    topic: str
    key: str | None = None
    publish_time_ms: int = 0
    redelivery_count: int = 0
    position: tuple[int, int, int] | None = None
    """(ledger, entry, batch index) on its partition, in the order the partition holds messages: shows a
    broker rewinding or skipping ahead on a handover (`service_layer.handover`). None when unknown."""


class RejectClass(StrEnum):
    """Why a message is dead-lettered: the codec's reason classes plus `contract` (decoded, but it cannot be
    expressed as a valid contract event, e.g. a bindUser without uid)."""

    TOO_LARGE = "too_large"
    ENVELOPE = "envelope"
    SIGN = "sign"
    DECODE = "decode"
    DECRYPT = "decrypt"
    PAYLOAD = "payload"
    CONTRACT = "contract"


class InvalidTuyaMessage(ValueError):
    """A decoded message that violates the contract of the event it maps to. `detail` is safe to log."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Publish:
    """Publish the event `body` keyed by `key`; afterwards `dedup_key` counts as seen."""

    event_id: str
    event_type: str
    body: bytes
    """The event's JSON, as the contract's model writes it (built once, see `handlers.to_outcome`)."""
    key: str | None
    dedup_key: str
    kind: str
    """The Tuya message kind (`statusReport`, `online`, `devicePropertyMessage`, ...), a metric label."""

    @property
    def event(self) -> Envelope[Any]:
        """The event as its contract model, read back from `body` (as a consumer reads it)."""
        event: Envelope[Any] = topics.DEVICE_EVENTS.decode(self.body)
        return event


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Dead-letter the original message with the reason class and a detail that holds no plaintext."""

    reason: RejectClass
    detail: str


Outcome = Publish | DeadLetter
