"""The topic registry: every Pulsar topic tuya-fleet uses, declared once.

Services never spell a topic name; they use `topics.DEVICE_EVENTS.name`, encode with `topic.encode(envelope)`,
decode with `topic.decode(raw)`, key with `topic.key.of(envelope)` and subscribe with `topic.subscription`.
Internal topics live under the `fleet` tenant, one namespace per domain (`namespaces()`); Tuya's own stream
lives under the project's access id (`tuya_event_topic`).
"""

from __future__ import annotations

import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from typing import Any, Generic, TypeVar, cast

from pydantic import BaseModel, TypeAdapter

from fleet_contracts import deadletter, device, ota, pairing, status, unbinding
from fleet_contracts.envelope import Envelope, from_json_bytes, to_json_bytes

TENANT = "fleet"

T = TypeVar("T")


class SubscriptionType(StrEnum):
    """Pulsar subscription types, spelled as the Pulsar clients and admin API spell them."""

    KEY_SHARED = "KeyShared"  # ordered per key, parallel across keys
    SHARED = "Shared"  # no ordering, any consumer
    FAILOVER = "Failover"  # one active consumer per partition, ordered
    EXCLUSIVE = "Exclusive"


class Service(StrEnum):
    INGEST = "ingest"
    STATUS = "status"
    PAIRING = "pairing"
    UNBINDING = "unbinding"
    OTA = "ota"


@dataclass(frozen=True)
class PartitionKey:
    """The payload field whose value is the Pulsar message key (ordering key for KeyShared consumers)."""

    field: str

    def of(self, envelope: Envelope[Any]) -> str | None:
        """The key of this envelope; None when the payload has no value for it (the message goes unkeyed)."""
        value = getattr(envelope.data, self.field, None)
        return None if value is None else str(value)


@dataclass(frozen=True)
class Topic(Generic[T]):
    """One Pulsar topic: its full name, what it carries, how it is keyed, who writes and reads it."""

    name: str
    schema: Any = field(repr=False)
    """The payload type: a discriminated union of envelope classes (annotated), validated with `adapter`."""
    key: PartitionKey
    producer: Service
    consumers: tuple[Service, ...]
    subscription: SubscriptionType
    description: str

    @property
    def tenant(self) -> str:
        return self.name.removeprefix("persistent://").split("/")[0]

    @property
    def namespace(self) -> str:
        """`tenant/namespace`, e.g. `fleet/device`."""
        return "/".join(self.name.removeprefix("persistent://").split("/")[:2])

    @property
    def local_name(self) -> str:
        return self.name.rsplit("/", 1)[1]

    @cached_property
    def adapter(self) -> TypeAdapter[T]:
        return TypeAdapter(self.schema)

    def envelope_classes(self) -> dict[str, type[Envelope[Any]]]:
        """Event type -> envelope class for every type this topic carries."""
        return {cls.event_type(): cls for cls in _union_members(self.schema)}

    def encode(self, envelope: T) -> bytes:
        if not isinstance(envelope, BaseModel):
            raise TypeError(f"expected an envelope model, got {type(envelope).__name__}")
        return to_json_bytes(envelope)

    def decode(self, raw: bytes | str) -> T:
        """Validate a message body as one of this topic's event types (`pydantic.ValidationError` if not)."""
        return from_json_bytes(raw, self.adapter)


def _union_members(schema: Any) -> list[type[Envelope[Any]]]:
    if typing.get_origin(schema) is typing.Annotated:
        schema = typing.get_args(schema)[0]
    members = typing.get_args(schema) or (schema,)
    return [cast(type[Envelope[Any]], m) for m in members]


def _name(namespace: str, topic: str) -> str:
    return f"persistent://{TENANT}/{namespace}/{topic}"


DEVICE_EVENTS: Topic[device.DeviceEvent] = Topic(
    name=_name("device", "events"),
    schema=device.DeviceEvent,
    key=PartitionKey("device_id"),
    producer=Service.INGEST,
    consumers=(Service.STATUS, Service.PAIRING, Service.UNBINDING, Service.OTA),
    subscription=SubscriptionType.KEY_SHARED,
    description="Every fact Tuya's push stream reports about a device, as typed events, ordered per device.",
)

INGEST_TUYA_DEAD_LETTER: Topic[deadletter.TuyaDeadLetter] = Topic(
    name=_name("ingest", "tuya-dead-letter"),
    schema=deadletter.TuyaDeadLetter,
    key=PartitionKey("message_id"),
    producer=Service.INGEST,
    consumers=(),
    subscription=SubscriptionType.SHARED,
    description="Tuya messages ingest could not decrypt, parse or map, kept raw with the reason.",
)

STATUS_SHADOW_EVENTS: Topic[status.ShadowEvent] = Topic(
    name=_name("status", "shadow-events"),
    schema=status.ShadowEvent,
    key=PartitionKey("device_id"),
    producer=Service.STATUS,
    consumers=(),
    subscription=SubscriptionType.KEY_SHARED,
    description="Real changes of a device shadow: only the changed DPs, old and new value with device time.",
)

STATUS_PRESENCE_EVENTS: Topic[status.PresenceEvent] = Topic(
    name=_name("status", "presence-events"),
    schema=status.PresenceEvent,
    key=PartitionKey("device_id"),
    producer=Service.STATUS,
    consumers=(Service.OTA,),
    subscription=SubscriptionType.KEY_SHARED,
    description="A device went online or offline (by device time); repeats are not changes.",
)

PAIRING_EVENTS: Topic[pairing.PairingEvent] = Topic(
    name=_name("pairing", "events"),
    schema=pairing.PairingEvent,
    key=PartitionKey("token"),
    producer=Service.PAIRING,
    consumers=(),
    subscription=SubscriptionType.KEY_SHARED,
    description="Pairing tokens issued, consumed, expired and the devices that paired or failed with them.",
)

UNBINDING_COMMANDS: Topic[unbinding.UnbindingCommand] = Topic(
    name=_name("unbinding", "commands"),
    schema=unbinding.UnbindingCommand,
    key=PartitionKey("batch_id"),
    producer=Service.UNBINDING,
    consumers=(Service.UNBINDING,),
    subscription=SubscriptionType.KEY_SHARED,
    description="Accepted batch-unbinding requests, queued from the HTTP API to the unbinding workers.",
)

UNBINDING_EVENTS: Topic[unbinding.UnbindingEvent] = Topic(
    name=_name("unbinding", "events"),
    schema=unbinding.UnbindingEvent,
    key=PartitionKey("batch_id"),
    producer=Service.UNBINDING,
    consumers=(),
    subscription=SubscriptionType.KEY_SHARED,
    description="Batch unbinding: batch requested, each device unbound or refused with its cause, finished.",
)

OTA_FIRMWARE_EVENTS: Topic[ota.FirmwareEvent] = Topic(
    name=_name("ota", "firmware-events"),
    schema=ota.FirmwareEvent,
    key=PartitionKey("firmware_id"),
    producer=Service.OTA,
    consumers=(),
    subscription=SubscriptionType.KEY_SHARED,
    description="Firmware builds added to the catalog (product, channel, version, checksums, upgrade type).",
)

OTA_RELEASE_EVENTS: Topic[ota.ReleaseEvent] = Topic(
    name=_name("ota", "release-events"),
    schema=ota.ReleaseEvent,
    key=PartitionKey("release_id"),
    producer=Service.OTA,
    consumers=(),
    subscription=SubscriptionType.KEY_SHARED,
    description="Release lifecycle (started, paused, resumed, promoted, halted, finished), device upgrades.",
)


def _service_dead_letter(service: Service) -> Topic[deadletter.DeadLetter]:
    return Topic(
        name=_name(service.value, "dead-letter"),
        schema=deadletter.DeadLetter,
        key=PartitionKey("message_id"),
        producer=service,
        consumers=(),
        subscription=SubscriptionType.SHARED,
        description=f"Messages {service.value} gave up on after its redeliveries, with the error recorded.",
    )


STATUS_DEAD_LETTER = _service_dead_letter(Service.STATUS)
PAIRING_DEAD_LETTER = _service_dead_letter(Service.PAIRING)
UNBINDING_DEAD_LETTER = _service_dead_letter(Service.UNBINDING)
OTA_DEAD_LETTER = _service_dead_letter(Service.OTA)

ALL: tuple[Topic[Any], ...] = (
    DEVICE_EVENTS,
    INGEST_TUYA_DEAD_LETTER,
    STATUS_SHADOW_EVENTS,
    STATUS_PRESENCE_EVENTS,
    STATUS_DEAD_LETTER,
    PAIRING_EVENTS,
    PAIRING_DEAD_LETTER,
    UNBINDING_COMMANDS,
    UNBINDING_EVENTS,
    UNBINDING_DEAD_LETTER,
    OTA_FIRMWARE_EVENTS,
    OTA_RELEASE_EVENTS,
    OTA_DEAD_LETTER,
)
"""Every internal topic, in declaration order."""

#: Declared namespaces (tenant/namespace), one per domain; every topic lives in one of them.
NAMESPACES: tuple[str, ...] = tuple(
    f"{TENANT}/{ns}" for ns in ("device", "ingest", "status", "pairing", "unbinding", "ota")
)


def all_topics() -> Iterator[Topic[Any]]:
    return iter(ALL)


def namespaces() -> list[str]:
    """Namespaces to create under tenant `fleet`, e.g. `fleet/device` (the local stack creates them)."""
    return list(NAMESPACES)


def by_name(name: str) -> Topic[Any]:
    for topic in ALL:
        if topic.name == name:
            return topic
    raise KeyError(name)


def envelope_classes() -> dict[str, type[Envelope[Any]]]:
    """Every event/command type on any topic -> its envelope class."""
    classes: dict[str, type[Envelope[Any]]] = {}
    for topic in ALL:
        classes.update(topic.envelope_classes())
    return classes


# Tuya's side (REFERENCE.md section 1): tenant = access id, namespace `out`, Failover subscription.

TUYA_SUBSCRIPTION_TYPE = SubscriptionType.FAILOVER


def tuya_event_topic(access_id: str, test: bool = False) -> str:
    """Tuya's push topic for a project: `persistent://{access_id}/out/event` (or `event-test`)."""
    if not access_id or "/" in access_id:
        raise ValueError(f"invalid Tuya access id: {access_id!r}")
    return f"persistent://{access_id}/out/{'event-test' if test else 'event'}"


def tuya_subscription(access_id: str) -> str:
    """The subscription name Tuya creates for a project: `{access_id}-sub`."""
    if not access_id or "/" in access_id:
        raise ValueError(f"invalid Tuya access id: {access_id!r}")
    return f"{access_id}-sub"
