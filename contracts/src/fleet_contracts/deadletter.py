"""Dead letters: messages a consumer could not handle, kept with the reason instead of being lost.

One story for both kinds. A dead letter is a contract event on a dead-letter topic whose payload holds the
original message byte for byte (base64), its properties, where it came from and why it was given up:

- `ingest` writes Tuya messages it cannot decrypt, parse or map to `topics.INGEST_TUYA_DEAD_LETTER` as
  `TuyaMessageDeadLetteredEvent`;
- every other service's subscriptions dead-letter through the shared Pulsar broker
  (`fleet_shared.pulsar.DeadLetter`): a message rejected by its handler, or still failing after N
  redeliveries, goes to the service's own `dead-letter` topic (Pulsar's `<topic>-<subscription>-DLQ`
  when none is configured) as `MessageDeadLetteredEvent`.

The Pulsar message of a service dead letter is keyed by the original message id (the topic's key) and
carries the properties named below, so tools that filter or re-drive by Pulsar properties keep working:
Pulsar's own dead-letter properties (`REAL_TOPIC`, `ORIGIN_MESSAGE_ID`), the error and its context, and
the original W3C `traceparent`/`tracestate` so the trace continues. The envelope's `tenant` and
`region` are those of the original envelope, or `unknown` when the original body is not a readable
envelope (often the very reason it was dead-lettered); its `source` is `/fleet/<subscription>`; its `id`
is derived from the original topic, message id and subscription, so a dead letter written twice (its ack
lost) is recognisable as one.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, ClassVar, Literal

from pydantic import AwareDatetime, Field

from fleet_contracts._base import Payload, Reason
from fleet_contracts.envelope import Envelope

MAX_DEAD_PAYLOAD_BASE64 = 2 * 1024 * 1024
#: The most original bytes a dead letter keeps (base64 grows by 4/3); longer bodies are truncated and the
#: reason says so.
MAX_DEAD_PAYLOAD_BYTES = MAX_DEAD_PAYLOAD_BASE64 // 4 * 3
#: `tenant`/`region` of a dead letter whose original body is not a readable envelope.
UNKNOWN = "unknown"

# Pulsar properties of a service dead letter (all strings, as Pulsar properties are).
#: Pulsar's dead-letter convention: the topic the message was consumed from.
PROPERTY_REAL_TOPIC = "REAL_TOPIC"
#: Pulsar's dead-letter convention: the original message id.
PROPERTY_ORIGIN_MESSAGE_ID = "ORIGIN_MESSAGE_ID"
#: The error message of the last failure (at most 1,024 characters), or why the handler gave up.
PROPERTY_ERROR = "error"
#: The exception class of the last failure (e.g. `ValidationError`), or `nacked`/`rejected` when the handler
#: gave up without one: the payload's `error_type`.
PROPERTY_ERROR_TYPE = "error_type"
#: Same as `REAL_TOPIC`, under the name the fleet broker used first.
PROPERTY_ORIGINAL_TOPIC = "original_topic"
#: Same as `ORIGIN_MESSAGE_ID`, under the name the fleet broker used first.
PROPERTY_ORIGINAL_MESSAGE_ID = "original_message_id"
#: How many times the message had been redelivered when it was given up (decimal).
PROPERTY_REDELIVERY_COUNT = "redelivery_count"
#: The subscription that gave up on it.
PROPERTY_SUBSCRIPTION = "subscription"
#: Every property a service dead letter carries (plus `traceparent`/`tracestate` when the original had them).
DEAD_LETTER_PROPERTIES: tuple[str, ...] = (
    PROPERTY_REAL_TOPIC,
    PROPERTY_ORIGIN_MESSAGE_ID,
    PROPERTY_ERROR,
    PROPERTY_ERROR_TYPE,
    PROPERTY_ORIGINAL_TOPIC,
    PROPERTY_ORIGINAL_MESSAGE_ID,
    PROPERTY_REDELIVERY_COUNT,
    PROPERTY_SUBSCRIPTION,
)


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
    error_type: str = Field(
        min_length=1,
        max_length=128,
        description=(
            "Class of the failure: ingest's reject class (e.g. `decrypt`), or the exception class for a "
            "service dead letter (`nacked` or `rejected` when the handler gave up without one)."
        ),
    )
    reason: Reason


class TuyaMessageDeadLetteredEvent(Envelope[MessageDeadLettered]):
    """A Tuya push message ingest could not decrypt, parse or map."""

    type: Literal["ingest.tuya_message.dead_lettered.v1"] = "ingest.tuya_message.dead_lettered.v1"


class MessageDeadLetteredEvent(Envelope[MessageDeadLettered]):
    """A message a service's subscription gave up on, written by the shared Pulsar broker."""

    type: Literal["fleet.message.dead_lettered.v1"] = "fleet.message.dead_lettered.v1"


TuyaDeadLetter = Annotated[TuyaMessageDeadLetteredEvent, Field(discriminator="type")]
DeadLetter = Annotated[MessageDeadLetteredEvent, Field(discriminator="type")]


def publish_time_from_ms(ms: int) -> datetime | None:
    """A dead-lettered message's publish time (epoch ms) as a UTC datetime; None when absent (0) or out of
    range, since it comes from untrusted input and building a dead letter must never raise."""
    if ms <= 0:
        return None
    try:
        return datetime.fromtimestamp(ms / 1000, UTC)
    except (ValueError, OverflowError, OSError):
        return None
