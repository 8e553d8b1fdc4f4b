"""Messaging span names and attributes, per OpenTelemetry's semantic conventions for messaging spans (the
version opentelemetry-semantic-conventions ships: its `messaging_attributes`).

- span name `{messaging.operation.name} {destination}`: `send persistent://fleet/device/events`,
  `process persistent://fleet/device/events`, `nack ...`; the destination is the topic, a partition's
  suffix left out (the partition goes in `messaging.destination.partition.id`), so a name stays low in
  cardinality;
- `messaging.system = pulsar`, `messaging.operation.type` (`send`, `receive`, `process`, `settle`),
  `messaging.operation.name` (Pulsar's own word: `send`, `process`, `ack`, `nack`, `dead_letter`, ...),
  `messaging.destination.name`, `messaging.consumer.group.name` (the Pulsar subscription),
  `messaging.message.id`;
- kinds: PRODUCER for a send, CONSUMER for a receive or a process, CLIENT for a settlement.

The broker's middleware (`fleet_shared.pulsar.opentelemetry`) and ingest's batch spans use these.
"""

from __future__ import annotations

import re

from opentelemetry.semconv._incubating.attributes import messaging_attributes as messaging
from opentelemetry.util.types import AttributeValue

SYSTEM = messaging.MESSAGING_SYSTEM
OPERATION_TYPE = messaging.MESSAGING_OPERATION_TYPE
OPERATION_NAME = messaging.MESSAGING_OPERATION_NAME
DESTINATION_NAME = messaging.MESSAGING_DESTINATION_NAME
DESTINATION_PARTITION_ID = messaging.MESSAGING_DESTINATION_PARTITION_ID
CONSUMER_GROUP_NAME = messaging.MESSAGING_CONSUMER_GROUP_NAME
MESSAGE_ID = messaging.MESSAGING_MESSAGE_ID
MESSAGE_BODY_SIZE = messaging.MESSAGING_MESSAGE_BODY_SIZE
MESSAGE_CONVERSATION_ID = messaging.MESSAGING_MESSAGE_CONVERSATION_ID
BATCH_MESSAGE_COUNT = messaging.MESSAGING_BATCH_MESSAGE_COUNT
#: Pulsar's message key (no convention names it; Kafka's would be `messaging.kafka.message.key`)
PULSAR_MESSAGE_KEY = "messaging.pulsar.message.key"

PULSAR = messaging.MessagingSystemValues.PULSAR.value
SEND = messaging.MessagingOperationTypeValues.SEND.value
RECEIVE = messaging.MessagingOperationTypeValues.RECEIVE.value
PROCESS = messaging.MessagingOperationTypeValues.PROCESS.value
SETTLE = messaging.MessagingOperationTypeValues.SETTLE.value

_PARTITION = re.compile(r"-partition-(\d+)$")


def span_name(operation_name: str, topic: str) -> str:
    """`{operation name} {destination}`, the destination without a partition's suffix."""
    return f"{operation_name} {_PARTITION.sub('', topic)}"


def destination(topic: str) -> dict[str, AttributeValue]:
    """`messaging.destination.name` (the topic, without a partition's suffix) and, for a partition of a
    partitioned topic, `messaging.destination.partition.id`."""
    match = _PARTITION.search(topic)
    if match is None:
        return {DESTINATION_NAME: topic}
    return {DESTINATION_NAME: topic[: match.start()], DESTINATION_PARTITION_ID: match.group(1)}


def operation(operation_type: str, operation_name: str, topic: str) -> dict[str, AttributeValue]:
    """The attributes every messaging span of the bus carries: system, operation, destination."""
    return {
        SYSTEM: PULSAR,
        OPERATION_TYPE: operation_type,
        OPERATION_NAME: operation_name,
        **destination(topic),
    }
