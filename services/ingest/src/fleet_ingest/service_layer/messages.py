"""The bodies and properties of what ingest publishes: a device event, or a dead letter."""

from __future__ import annotations

import logging

from fleet_contracts.envelope import to_json_bytes
from fleet_contracts.outbox import EVENT_ID_PROPERTY
from fleet_ingest.domain.deadletters import dead_letter_event
from fleet_ingest.domain.model import DeadLetter, Project, Publish, TuyaDelivery

log = logging.getLogger(__name__)

#: Properties on every message ingest publishes, besides W3C `traceparent`/`tracestate` and (on device events)
#: the event id every tuya-fleet publisher sets, so consumers de-duplicate without parsing the body.
PROP_CONTENT_TYPE = "content-type"
PROP_TUYA_MESSAGE_ID = "tuya-message-id"
PROP_TUYA_PUBLISH_TIME = "tuya-publish-time"


def event_message(
    outcome: Publish, delivery: TuyaDelivery, trace_carrier: dict[str, str] | None
) -> tuple[bytes, dict[str, str]]:
    """The device event's JSON and its properties (the trace context of the publish, when traced)."""
    return outcome.body, {
        PROP_CONTENT_TYPE: "application/json",
        EVENT_ID_PROPERTY: outcome.event_id,
        PROP_TUYA_MESSAGE_ID: delivery.message_id,
        PROP_TUYA_PUBLISH_TIME: str(delivery.publish_time_ms),
        **(trace_carrier or {}),
    }


def dead_letter_message(
    outcome: DeadLetter, delivery: TuyaDelivery, *, project: Project, subscription: str
) -> tuple[bytes, dict[str, str]]:
    """The dead-letter record's JSON (the Tuya message byte for byte, and why) and its properties."""
    dead = dead_letter_event(delivery, outcome, project=project, subscription=subscription)
    log.warning(
        "dead-lettering a Tuya message",
        extra={"message_id": delivery.message_id, "reason": outcome.reason.value, "detail": outcome.detail},
    )
    return to_json_bytes(dead), {
        PROP_CONTENT_TYPE: "application/json",
        PROP_TUYA_MESSAGE_ID: delivery.message_id,
    }
