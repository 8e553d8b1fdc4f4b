"""The dead letter a subscription writes when it gives up on a message: the contract's
`MessageDeadLetteredEvent` (the original bytes and properties inside), with the error and Pulsar's own
dead-letter properties on the Pulsar message. `fleet_contracts.deadletter` documents the format."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import orjson
from faststream.response.publish_type import PublishType

from fleet_contracts import deadletter as contract
from fleet_contracts.envelope import CONTENT_TYPE, service_source, to_json_bytes

from .message import PulsarPublishCommand

# Field bounds of `MessageDeadLettered`: a dead letter must always validate, whatever the original was.
_MAX_ID = 256
_MAX_TOPIC = 512
_MAX_KEY = 256
_MAX_REASON = 1024
_MAX_ERROR_TYPE = 128
_MAX_PROPERTY = 1024
_TRACE_PROPERTIES = ("traceparent", "tracestate")
# Namespace of the dead letters' event ids (uuid5 of topic, message id and subscription).
_ID_NAMESPACE = uuid.UUID("6f1c1f4e-3a57-4d61-9d0a-5c0de1e77e11")


def dead_letter_command(
    raw: Any, error: BaseException | None, *, subscription: str, topic: str, gave_up: str
) -> PulsarPublishCommand:
    """The publish command that dead-letters `raw` (a `pulsar.Message`) to `topic`.

    `gave_up` is the error type recorded when no exception is known (`nacked` or `rejected`).
    """
    original_topic = str(raw.topic_name())
    message_id = str(raw.message_id())
    original_properties = {str(k): str(v) for k, v in raw.properties().items()}
    error_type = type(error).__qualname__[:_MAX_ERROR_TYPE] if error is not None else gave_up
    reason = (str(error) if error is not None else f"{gave_up} by the handler") or error_type
    event = _event(raw, original_topic, message_id, original_properties, subscription, error_type, reason)
    properties = {
        **{k: original_properties[k] for k in _TRACE_PROPERTIES if k in original_properties},
        contract.PROPERTY_REAL_TOPIC: original_topic,
        contract.PROPERTY_ORIGIN_MESSAGE_ID: message_id,
        contract.PROPERTY_ERROR: event.data.reason,
        contract.PROPERTY_ERROR_TYPE: error_type,
        contract.PROPERTY_ORIGINAL_TOPIC: original_topic,
        contract.PROPERTY_ORIGINAL_MESSAGE_ID: message_id,
        contract.PROPERTY_REDELIVERY_COUNT: str(raw.redelivery_count()),
        contract.PROPERTY_SUBSCRIPTION: subscription,
        "content-type": CONTENT_TYPE,
    }
    return PulsarPublishCommand(
        to_json_bytes(event),
        topic=topic,
        key=event.data.message_id,
        headers=properties,
        _publish_type=PublishType.PUBLISH,
    )


def _event(
    raw: Any,
    topic: str,
    message_id: str,
    properties: dict[str, str],
    subscription: str,
    error_type: str,
    reason: str,
) -> contract.MessageDeadLetteredEvent:
    body = bytes(raw.data())
    if len(body) > contract.MAX_DEAD_PAYLOAD_BYTES:
        body = body[: contract.MAX_DEAD_PAYLOAD_BYTES]
        note = f" (payload truncated to {contract.MAX_DEAD_PAYLOAD_BYTES} bytes)"
        reason = reason[: _MAX_REASON - len(note)] + note
    publish_time = contract.publish_time_from_ms(raw.publish_timestamp())
    tenant, region = _tenant_and_region(body)
    data = contract.MessageDeadLettered(
        message_id=message_id[:_MAX_ID],
        topic=topic[:_MAX_TOPIC],
        subscription=subscription[:_MAX_ID],
        key=str(raw.partition_key() or "")[:_MAX_KEY] or None,
        publish_time=publish_time,
        redelivery_count=max(0, int(raw.redelivery_count())),
        properties={k[:_MAX_ID]: v[:_MAX_PROPERTY] for k, v in properties.items()},
        payload_base64=base64.b64encode(body).decode(),
        error_type=error_type,
        reason=reason[:_MAX_REASON],
    )
    return contract.MessageDeadLetteredEvent.build(
        data,
        source=service_source(subscription),
        tenant=tenant,
        region=region,
        event_id=str(uuid.uuid5(_ID_NAMESPACE, f"{topic}\n{message_id}\n{subscription}")),
    )


def _tenant_and_region(body: bytes) -> tuple[str, str]:
    """Those of the original envelope when it has them (every fleet topic carries one), else unknown."""
    try:
        original = orjson.loads(body)
    except orjson.JSONDecodeError:
        return contract.UNKNOWN, contract.UNKNOWN
    if not isinstance(original, dict):
        return contract.UNKNOWN, contract.UNKNOWN
    return _bounded(original.get("tenant"), 64), _bounded(original.get("region"), 16)


def _bounded(value: object, limit: int) -> str:
    return value if isinstance(value, str) and 0 < len(value) <= limit else contract.UNKNOWN
