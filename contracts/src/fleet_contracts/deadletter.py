"""Dead letters: messages a consumer could not handle, kept with the reason instead of being lost.

`ingest` writes Tuya messages it cannot decode or map to `topics.INGEST_TUYA_DEAD_LETTER`; each service writes
internal messages that exhausted their redeliveries to its own `dead-letter` topic.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import AwareDatetime, Field

from fleet_contracts._base import Payload, Reason
from fleet_contracts.envelope import Envelope

MAX_DEAD_PAYLOAD_BASE64 = 2 * 1024 * 1024


class MessageDeadLettered(Payload):
    """The original message, byte for byte (base64), with where it came from and why it was given up."""

    subject_field: ClassVar[str] = "message_id"

    message_id: str = Field(min_length=1, max_length=256, description="Pulsar message id of the original.")
    topic: str = Field(
        min_length=1, max_length=512, description="Full name of the topic it was consumed from."
    )
    subscription: str = Field(min_length=1, max_length=256, description="Subscription that gave up on it.")
    key: str | None = Field(default=None, max_length=256, description="Original partition key.")
    publish_time: AwareDatetime | None = Field(default=None, description="Original publish time.")
    redelivery_count: int = Field(ge=0)
    properties: dict[str, str] = Field(
        default_factory=dict, description="Original Pulsar properties (e.g. `em`, `traceparent`)."
    )
    payload_base64: str = Field(max_length=MAX_DEAD_PAYLOAD_BASE64, description="Original body, base64.")
    error_type: str = Field(min_length=1, max_length=128, description="Class of the failure, e.g. `decrypt`.")
    reason: Reason


class TuyaMessageDeadLetteredEvent(Envelope[MessageDeadLettered]):
    type: Literal["ingest.tuya_message.dead_lettered.v1"] = "ingest.tuya_message.dead_lettered.v1"


class MessageDeadLetteredEvent(Envelope[MessageDeadLettered]):
    type: Literal["fleet.message.dead_lettered.v1"] = "fleet.message.dead_lettered.v1"


TuyaDeadLetter = Annotated[TuyaMessageDeadLetteredEvent, Field(discriminator="type")]
DeadLetter = Annotated[MessageDeadLetteredEvent, Field(discriminator="type")]
