"""The span attributes that find a device, an unbinding batch or an OTA release across services.

`fleet trace ID` asks the trace viewer for spans tagged with one of these. The broker's middleware tags every
publish and consume span from the message key when the topic is keyed by one of these ids (the topic registry
says which); handlers tag their own spans with `tag_span`.
"""

from __future__ import annotations

import re
from functools import lru_cache

from opentelemetry import trace
from opentelemetry.util.types import AttributeValue

from fleet_contracts import topics

DEVICE_ID = "fleet.device_id"
BATCH_ID = "fleet.batch_id"
RELEASE_ID = "fleet.release_id"

#: the id attributes `fleet trace` searches, in the order it tries them
ID_ATTRIBUTES = (DEVICE_ID, BATCH_ID, RELEASE_ID)

_ATTRIBUTE_OF_KEY_FIELD = {"device_id": DEVICE_ID, "batch_id": BATCH_ID, "release_id": RELEASE_ID}
# Tuya's push topic (`persistent://{access_id}/out/event`, partitioned): keyed by device id
_TUYA_PUSH_TOPIC = re.compile(r"^persistent://[^/]+/out/event(-test)?(-partition-\d+)?$")
_PARTITION_SUFFIX = re.compile(r"-partition-\d+$")


def tag_span(
    span: trace.Span | None = None,
    *,
    device_id: str | None = None,
    batch_id: str | None = None,
    release_id: str | None = None,
) -> None:
    """Tag `span` (default: the current one) with the ids it concerns; None leaves an id out."""
    target = span if span is not None else trace.get_current_span()
    if not target.is_recording():
        return
    for name, value in ((DEVICE_ID, device_id), (BATCH_ID, batch_id), (RELEASE_ID, release_id)):
        if value:
            target.set_attribute(name, value)


@lru_cache(maxsize=1024)
def key_attribute(topic: str) -> str | None:
    """The id attribute a message key on `topic` is (None: the key is no id `fleet trace` looks up)."""
    if _TUYA_PUSH_TOPIC.match(topic):
        return DEVICE_ID
    name = _PARTITION_SUFFIX.sub("", topic)
    for known in topics.ALL:
        if known.name == name:
            return _ATTRIBUTE_OF_KEY_FIELD.get(known.key.field)
    return None


def key_attributes(topic: str, key: str | None) -> dict[str, AttributeValue]:
    """`{attribute: key}` for a message keyed by a device, batch or release id on `topic`, else empty."""
    if not key:
        return {}
    attribute = key_attribute(topic)
    return {attribute: key} if attribute else {}
