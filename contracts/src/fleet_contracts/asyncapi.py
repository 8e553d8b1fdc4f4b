"""An AsyncAPI 3.0 document built from the topic registry: channels are topics, messages are event types."""

from __future__ import annotations

import inspect
from typing import Any

from pydantic.json_schema import models_json_schema

from fleet_contracts import topics
from fleet_contracts.envelope import CONTENT_TYPE, Envelope

ASYNCAPI_VERSION = "3.0.0"
DOCUMENT_VERSION = "1.0.0"
PULSAR_BINDING_VERSION = "0.1.0"


def channel_id(topic: topics.Topic[Any]) -> str:
    """`<namespace>.<topic>`, e.g. `device.events`."""
    return f"{topic.namespace.split('/', 1)[1]}.{topic.local_name}"


def _summary(envelope_cls: type[Envelope[Any]]) -> str:
    data_cls = envelope_cls.model_fields["data"].annotation
    doc = inspect.getdoc(data_cls) if isinstance(data_cls, type) else None
    return (doc or envelope_cls.event_type()).split("\n", 1)[0]


def build_document() -> dict[str, Any]:
    classes = topics.envelope_classes()
    refs, defs = models_json_schema(
        [(cls, "validation") for cls in classes.values()],
        ref_template="#/components/schemas/{model}",
    )
    payload_ref: dict[str, Any] = {}
    for (model, _mode), ref in refs.items():
        payload_ref[model.__name__] = ref

    messages: dict[str, Any] = {}
    for event_type, cls in classes.items():
        messages[event_type] = {
            "name": event_type,
            "title": cls.__name__,
            "summary": _summary(cls),
            "contentType": CONTENT_TYPE,
            "payload": payload_ref[cls.__name__],
        }

    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for topic in topics.ALL:
        cid = channel_id(topic)
        channel_messages = {t: {"$ref": f"#/components/messages/{t}"} for t in topic.envelope_classes()}
        channels[cid] = {
            "address": topic.name,
            "title": cid,
            "description": topic.description,
            "messages": channel_messages,
            "bindings": {
                "pulsar": {
                    "namespace": topic.namespace.split("/", 1)[1],
                    "persistence": "persistent",
                    "bindingVersion": PULSAR_BINDING_VERSION,
                }
            },
            "x-fleet-partition-key": f"data.{topic.key.field}",
            "x-fleet-subscription-type": topic.subscription.value,
        }
        operation_messages = [{"$ref": f"#/channels/{cid}/messages/{t}"} for t in channel_messages]
        operations[f"{topic.producer.value}.send.{cid}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{cid}"},
            "summary": f"{topic.producer.value} publishes, keyed by data.{topic.key.field}.",
            "messages": operation_messages,
        }
        for consumer in topic.consumers:
            operations[f"{consumer.value}.receive.{cid}"] = {
                "action": "receive",
                "channel": {"$ref": f"#/channels/{cid}"},
                "summary": f"{consumer.value} consumes with a {topic.subscription.value} subscription.",
                "messages": operation_messages,
            }

    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "tuya-fleet events",
            "version": DOCUMENT_VERSION,
            "description": (
                "Internal Pulsar topics of tuya-fleet. Every message is a CloudEvents 1.0 JSON envelope; "
                "W3C traceparent/tracestate travel in the Pulsar message properties."
            ),
        },
        "defaultContentType": CONTENT_TYPE,
        "servers": {
            "pulsar": {
                "host": "localhost:6650",
                "protocol": "pulsar",
                "description": "Apache Pulsar; tenant `fleet`, one namespace per domain.",
                "bindings": {"pulsar": {"tenant": topics.TENANT, "bindingVersion": PULSAR_BINDING_VERSION}},
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": defs.get("$defs", {})},
    }
