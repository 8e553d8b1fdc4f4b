"""Plain functions from one Tuya delivery to what must happen with it; no I/O (the pipeline does that)."""

from __future__ import annotations

import logging

from fleet_contracts import topics
from fleet_contracts.envelope import to_json_bytes
from fleet_ingest.domain.dedup import dedup_key, event_id
from fleet_ingest.domain.mapping import push_time_ms, to_event, tuya_message_id
from fleet_ingest.domain.model import (
    DeadLetter,
    InvalidTuyaMessage,
    Outcome,
    Project,
    Publish,
    RejectClass,
    TuyaDelivery,
)
from fleet_ingest.domain.report_body import STATUS_REPORTED, project_fits, status_report_body
from fleet_shared.tuya.codec import DecodedMessage, PushCodec
from fleet_shared.tuya.errors import PushMessageRejected

log = logging.getLogger(__name__)


def decode(delivery: TuyaDelivery, codec: PushCodec) -> DecodedMessage | DeadLetter:
    """Decode one delivery; every failure is a `DeadLetter` with its reason class, never an exception."""
    try:
        return codec.decode(delivery.payload, delivery.properties)
    except PushMessageRejected as exc:
        return DeadLetter(RejectClass(exc.reason.value), exc.detail)
    except Exception as exc:  # a codec bug must not stop the stream: keep the message, say what happened
        log.exception(
            "decoding a Tuya message failed unexpectedly", extra={"message_id": delivery.message_id}
        )
        return DeadLetter(RejectClass.PAYLOAD, f"unexpected {type(exc).__name__} while decoding")


def to_outcome(delivery: TuyaDelivery, decoded: DecodedMessage, project: Project) -> Outcome:
    """The event to publish for a decoded message, or the reason it cannot become one.

    The body is written here, once: a status report straight to JSON when it is known to fit its contract
    (`report_body`), everything else through the contract models."""
    key = dedup_key(decoded)
    eid = event_id(project.access_id, key)
    kind = decoded.message.kind
    if project_fits(project):
        push_ms = push_time_ms(decoded, delivery.publish_time_ms)
        body = status_report_body(
            decoded.message,
            project=project,
            event_id=eid,
            push_ms=push_ms,
            message_id=tuya_message_id(decoded),
        )
        if body is not None:
            device = decoded.device_id
            return Publish(
                event_id=eid, event_type=STATUS_REPORTED, body=body, key=device, dedup_key=key, kind=kind
            )
    try:
        event = to_event(decoded, project=project, event_id=eid, fallback_time_ms=delivery.publish_time_ms)
        body = to_json_bytes(event)
    except InvalidTuyaMessage as exc:
        return DeadLetter(RejectClass.CONTRACT, exc.detail)
    except Exception as exc:  # a mapping bug: dead-letter rather than crash or loop on the message
        log.exception("mapping a Tuya message failed unexpectedly", extra={"message_id": delivery.message_id})
        return DeadLetter(RejectClass.CONTRACT, f"unexpected {type(exc).__name__} while mapping")
    return Publish(
        event_id=event.id,
        event_type=event.type,
        body=body,
        key=topics.DEVICE_EVENTS.key.of(event),
        dedup_key=key,
        kind=kind,
    )


def handle_delivery(delivery: TuyaDelivery, codec: PushCodec, project: Project) -> Outcome:
    """decode -> map: `Publish` or `DeadLetter` (duplicates are the pipeline's call: it knows the seen)."""
    decoded = decode(delivery, codec)
    if isinstance(decoded, DeadLetter):
        return decoded
    return to_outcome(delivery, decoded, project)
