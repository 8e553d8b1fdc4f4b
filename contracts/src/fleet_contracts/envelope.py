"""The CloudEvents 1.0 envelope every message on a fleet topic carries, and its JSON (orjson) codec.

W3C `traceparent` / `tracestate` travel in Pulsar message properties, not here: the body stays the same
whichever trace carried it, so redeliveries and replays compare byte for byte.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Generic, Literal, Self, TypeVar, cast, overload

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter
from pydantic.config import JsonDict

from fleet_contracts._base import Payload

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/json"

#: `<domain>.<entity...>.<fact>.v<N>`, lower-case, e.g. `device.status.reported.v1`.
EVENT_TYPE_PATTERN = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+\.v[1-9][0-9]*$"

#: Prefix of `dataschema`; the suffix is the event type, also the schema file name in contracts/schemas.
DATASCHEMA_PREFIX = "urn:tuya-fleet:schema:"

DataT = TypeVar("DataT", bound=Payload)
ModelT = TypeVar("ModelT", bound=BaseModel)
T = TypeVar("T")


def service_source(service: str) -> str:
    """CloudEvents `source` of a fleet service, e.g. `/fleet/ingest`."""
    return f"/fleet/{service}"


def dataschema_for(event_type: str) -> str:
    return f"{DATASCHEMA_PREFIX}{event_type}"


def _cloudevents_required(schema: JsonDict) -> None:
    # `specversion` and `type` have defaults in Python (the class pins them) but are REQUIRED CloudEvents
    # attributes on the wire; the published schema says so for consumers in other languages.
    required = schema.setdefault("required", [])
    if isinstance(required, list):
        for name in ("type", "specversion"):
            if name not in required:
                required.insert(0, name)


class Envelope(BaseModel, Generic[DataT]):
    """CloudEvents 1.0 attributes plus `tenant` and `region`, around a typed `data` payload.

    Concrete events subclass it with `type` pinned to a `Literal`, which is the discriminator of the per-topic
    unions (`TypeAdapter(DeviceEvent)` picks the right class from `type` alone).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", json_schema_extra=_cloudevents_required)

    specversion: Literal["1.0"] = Field(default="1.0", description="CloudEvents spec version.")
    id: str = Field(
        min_length=1,
        max_length=128,
        description="Event id, unique per source; consumers de-duplicate on it (at-least-once delivery).",
    )
    source: str = Field(
        min_length=1,
        max_length=256,
        description="URI-reference of the producing service, e.g. `/fleet/ingest`.",
    )
    type: str = Field(
        pattern=EVENT_TYPE_PATTERN,
        max_length=128,
        description="Versioned event type, e.g. `device.status.reported.v1`.",
    )
    subject: str | None = Field(
        default=None,
        max_length=128,
        description="What the event is about within the source: the device id, batch id, release id, ...",
    )
    time: AwareDatetime = Field(description="When the producer recorded the fact (UTC, RFC 3339).")
    datacontenttype: Literal["application/json"] = Field(
        default="application/json", description="Media type of `data`; always JSON."
    )
    dataschema: str | None = Field(
        default=None,
        max_length=256,
        description="URI of the JSON Schema of `data`'s envelope: `urn:tuya-fleet:schema:<type>`.",
    )
    tenant: str = Field(
        min_length=1, max_length=64, description="Tuya project access id (client_id) the fact belongs to."
    )
    region: str = Field(
        min_length=1,
        max_length=16,
        description="Tuya data-center region of the project, e.g. `eu`, `us`, `cn`.",
    )
    data: DataT = Field(description="The typed payload.")

    @classmethod
    def event_type(cls) -> str:
        """The `type` this envelope class is pinned to (its `Literal` default)."""
        default = cls.model_fields["type"].default
        if not isinstance(default, str):
            raise TypeError(f"{cls.__name__} does not pin `type`; build concrete event classes instead")
        return default

    @classmethod
    def build(
        cls,
        data: DataT,
        *,
        source: str,
        tenant: str,
        region: str,
        subject: str | None = None,
        event_id: str | None = None,
        time: datetime | None = None,
    ) -> Self:
        """A new envelope: fresh uuid4 id, current UTC time, subject from the payload's key field."""
        event_type = cls.event_type()
        if subject is None:
            subject = cast(str | None, getattr(data, type(data).subject_field, None))
        return cls(
            id=event_id or str(uuid.uuid4()),
            source=source,
            type=event_type,
            subject=subject,
            time=time or datetime.now(UTC),
            dataschema=dataschema_for(event_type),
            tenant=tenant,
            region=region,
            data=data,
        )


def to_json_bytes(message: BaseModel) -> bytes:
    """Serialize an envelope (or any contract) to compact JSON bytes with orjson."""
    return orjson.dumps(message.model_dump(mode="json"))


@overload
def from_json_bytes(raw: bytes | str, schema: type[ModelT]) -> ModelT: ...
@overload
def from_json_bytes(raw: bytes | str, schema: TypeAdapter[T]) -> T: ...
def from_json_bytes(raw: bytes | str, schema: type[BaseModel] | TypeAdapter[Any]) -> Any:
    """Parse JSON bytes with orjson and validate them as `schema` (a model class or a union's TypeAdapter).

    Raises `orjson.JSONDecodeError` (a `ValueError`) on malformed JSON and `pydantic.ValidationError` on a
    body that does not match the contract.
    """
    obj = orjson.loads(raw)
    if isinstance(schema, TypeAdapter):
        return schema.validate_python(obj)
    return schema.model_validate(obj)
