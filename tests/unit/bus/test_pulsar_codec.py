"""Bodies are JSON written by orjson, the project's one JSON library; a pydantic model is written by
pydantic's own serializer, which gives the very bytes orjson gives for its `model_dump(mode="json")`."""

from __future__ import annotations

import hashlib
import inspect
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from uuid import UUID

import orjson
import pytest
from faststream._internal.broker.pub_base import BrokerPublishMixin
from pydantic import BaseModel, Field

from fleet_contracts.device import DeviceBound, DeviceBoundEvent, TuyaOrigin
from fleet_contracts.envelope import service_source
from fleet_shared.pulsar.codec import JSON, TEXT, encode_body

pytestmark = pytest.mark.unit

# `PulsarBroker.publish` writes this FastStream source out. When an upgrade changes it, re-read the new
# version, port the change, then update the digest.
MIRRORED_BASIC_PUBLISH = "1c764df1332721d0"


def test_publish_mirrors_the_faststream_version_it_was_written_against() -> None:
    digest = hashlib.sha256(inspect.getsource(BrokerPublishMixin._basic_publish).encode()).hexdigest()[:16]
    assert digest == MIRRORED_BASIC_PUBLISH, (
        "FastStream's _basic_publish changed: port the change to PulsarBroker.publish, "
        f"then set MIRRORED_BASIC_PUBLISH = {digest!r}"
    )


class Colour(StrEnum):
    RED = "red"


class Inner(BaseModel):
    x: int


class Tricky(BaseModel):
    text: str
    floats: list[float]
    at: datetime
    naive: datetime
    span: timedelta
    raw: bytes
    colour: Colour
    id: UUID
    amount: Decimal
    inner: Inner
    loose: dict[str, object]
    nothing: None = None
    aliased: int = Field(alias="Aliased", default=3)


TRICKY = Tricky(
    text='é\u2028\n"\\\x1f😀\x7f',
    floats=[float("inf"), float("nan"), -0.0, 0.1 + 0.2, 1e-7, 1e16, 123456789.0, 1e300, 5e-324],
    at=datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
    naive=datetime(2024, 5, 1, 12, 0, 0, 123456),
    span=timedelta(seconds=1.5),
    raw=b"ab",
    colour=Colour.RED,
    id=UUID(int=5),
    amount=Decimal("1.10"),
    inner=Inner(x=1),
    loose={"k": [1, "v", None, 2.5]},
)

DEVICE_BOUND = DeviceBoundEvent.build(
    DeviceBound(
        device_id="dev-1",
        owner_uid="ay1",
        pairing_token="tok1",
        origin=TuyaOrigin(protocol=20, biz_code="bindUser", push_time_ms=1_764_410_000_000),
    ),
    source=service_source("ingest"),
    tenant="acc1",
    region="eu",
)


@pytest.mark.parametrize("model", [TRICKY, DEVICE_BOUND, Inner(x=-(2**63))])
def test_a_model_is_written_as_orjson_writes_its_json_dump(model: BaseModel) -> None:
    assert encode_body(model) == (orjson.dumps(model.model_dump(mode="json")), JSON)


def test_other_bodies() -> None:
    assert encode_body(None) == (b"", None)
    assert encode_body(b"\x00raw") == (b"\x00raw", None)
    assert encode_body("text") == (b"text", TEXT)
    assert encode_body({"model": Inner(x=1), "n": [1.5]}) == (b'{"model":{"x":1},"n":[1.5]}', JSON)
