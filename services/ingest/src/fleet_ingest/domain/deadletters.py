"""The dead-letter record of a Tuya message ingest could not turn into an event: the original bytes and
properties (base64), where it came from, and the reason class with a detail that holds no plaintext."""

from __future__ import annotations

import base64

from fleet_contracts.deadletter import (
    MAX_DEAD_PAYLOAD_BASE64,
    MessageDeadLettered,
    TuyaMessageDeadLetteredEvent,
    publish_time_from_ms,
)
from fleet_ingest.domain.dedup import dead_letter_id
from fleet_ingest.domain.model import DeadLetter, Project, TuyaDelivery

# base64 grows by 4/3; keep the encoded payload within the contract's bound.
_MAX_RAW_BYTES = MAX_DEAD_PAYLOAD_BASE64 // 4 * 3
_MAX_PROPERTY_CHARS = 1024


def dead_letter_event(
    delivery: TuyaDelivery, rejection: DeadLetter, *, project: Project, subscription: str
) -> TuyaMessageDeadLetteredEvent:
    payload = delivery.payload
    reason = rejection.detail or rejection.reason.value
    if len(payload) > _MAX_RAW_BYTES:
        payload = payload[:_MAX_RAW_BYTES]
        reason = f"{reason} (payload truncated to {_MAX_RAW_BYTES} bytes)"
    properties = {str(k)[:256]: str(v)[:_MAX_PROPERTY_CHARS] for k, v in delivery.properties.items()}
    publish_time = publish_time_from_ms(delivery.publish_time_ms)
    data = MessageDeadLettered(
        message_id=delivery.message_id[:256],
        topic=delivery.topic[:512],
        subscription=subscription,
        key=delivery.key[:256] if delivery.key else None,
        publish_time=publish_time,
        redelivery_count=max(0, delivery.redelivery_count),
        properties=properties,
        payload_base64=base64.b64encode(payload).decode(),
        error_type=rejection.reason.value,
        reason=reason[:1024],
    )
    return TuyaMessageDeadLetteredEvent.build(
        data,
        source=project.source,
        tenant=project.access_id,
        region=project.region,
        event_id=dead_letter_id(project.access_id, delivery.topic, delivery.message_id),
        time=publish_time,
    )
