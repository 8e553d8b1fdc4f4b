from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from fleet_contracts import device, topics
from fleet_contracts.envelope import (
    EVENT_TYPE_PATTERN,
    Envelope,
    dataschema_for,
    from_json_bytes,
    service_source,
    to_json_bytes,
)

from .contracts_samples import DEVICE, MS, REGION, TENANT, all_samples

pytestmark = pytest.mark.unit

SAMPLES = all_samples()
DEVICE_EVENT = TypeAdapter(device.DeviceEvent)


def _online() -> device.DeviceOnline:
    return device.DeviceOnline(
        device_id=DEVICE,
        origin=device.TuyaOrigin(protocol=20, biz_code="online", push_time_ms=MS),
        device_time_ms=MS,
    )


def test_build_fills_cloudevents_attributes() -> None:
    before = datetime.now(UTC)
    env = device.DeviceOnlineEvent.build(
        _online(), source=service_source("ingest"), tenant=TENANT, region=REGION
    )

    assert uuid.UUID(env.id).version == 4
    assert env.specversion == "1.0"
    assert env.type == "device.online.v1"
    assert env.subject == DEVICE
    assert env.source == "/fleet/ingest"
    assert env.datacontenttype == "application/json"
    assert env.dataschema == dataschema_for("device.online.v1") == "urn:tuya-fleet:schema:device.online.v1"
    assert env.time.utcoffset() == timedelta(0)
    assert before <= env.time <= datetime.now(UTC)


def test_build_gives_every_envelope_a_new_id() -> None:
    ids = {
        device.DeviceOnlineEvent.build(_online(), source="/fleet/ingest", tenant=TENANT, region=REGION).id
        for _ in range(50)
    }
    assert len(ids) == 50


def test_build_takes_an_explicit_subject_and_id() -> None:
    env = device.DeviceOnlineEvent.build(
        _online(), source="/fleet/ingest", tenant=TENANT, region=REGION, subject="other", event_id="e-1"
    )
    assert (env.subject, env.id) == ("other", "e-1")


def test_the_generic_envelope_cannot_build_without_a_pinned_type() -> None:
    with pytest.raises(TypeError, match="does not pin `type`"):
        Envelope[device.DeviceOnline].build(_online(), source="/fleet/ingest", tenant=TENANT, region=REGION)


@pytest.mark.parametrize("env", SAMPLES, ids=lambda e: e.type)
def test_every_event_round_trips_through_orjson_and_its_class(env: Envelope[Any]) -> None:
    raw = to_json_bytes(env)
    assert isinstance(orjson.loads(raw), dict)
    again = from_json_bytes(raw, type(env))
    assert again == env
    assert to_json_bytes(again) == raw


@pytest.mark.parametrize("env", SAMPLES, ids=lambda e: e.type)
def test_every_event_round_trips_through_its_topic_union(env: Envelope[Any]) -> None:
    carrying = [t for t in topics.ALL if env.type in t.envelope_classes()]
    assert carrying, f"{env.type} is on no topic"
    for topic in carrying:
        parsed = topic.decode(topic.encode(env))
        assert type(parsed) is type(env)
        assert parsed == env


def test_the_device_union_picks_the_class_from_type() -> None:
    by_type = {e.type: e for e in SAMPLES if e.type.startswith("device.")}
    for event_type, env in by_type.items():
        parsed = from_json_bytes(to_json_bytes(env), DEVICE_EVENT)
        assert parsed.type == event_type
        assert type(parsed) is type(env)


def test_serialized_body_is_plain_cloudevents_json() -> None:
    env = next(e for e in SAMPLES if e.type == "device.status.reported.v1")
    body = orjson.loads(to_json_bytes(env))
    assert set(body) == {
        "specversion",
        "id",
        "source",
        "type",
        "subject",
        "time",
        "datacontenttype",
        "dataschema",
        "tenant",
        "region",
        "data",
    }
    assert body["time"] == "2025-03-01T12:00:00Z"
    assert "traceparent" not in body
    assert body["data"]["dps"][0] == {"code": "switch_1", "dp_id": 1, "value": True, "device_time_ms": MS - 5}


def _body(**changes: Any) -> dict[str, Any]:
    env = next(e for e in SAMPLES if e.type == "device.online.v1")
    body: dict[str, Any] = orjson.loads(to_json_bytes(env))
    body.update(changes)
    return {k: v for k, v in body.items() if v is not _MISSING}


_MISSING = object()


def test_an_unknown_type_names_the_expected_ones() -> None:
    with pytest.raises(ValidationError) as err:
        DEVICE_EVENT.validate_python(_body(type="device.exploded.v1"))
    text = str(err.value)
    assert "union_tag_invalid" in text
    assert "'device.exploded.v1'" in text
    assert "'device.online.v1'" in text


def test_a_missing_type_is_reported_as_such() -> None:
    with pytest.raises(
        ValidationError, match=r"union_tag_not_found|Unable to extract tag using discriminator"
    ):
        DEVICE_EVENT.validate_python(_body(type=_MISSING))


def test_a_missing_id_is_reported_with_its_name() -> None:
    with pytest.raises(ValidationError) as err:
        from_json_bytes(orjson.dumps(_body(id=_MISSING)), DEVICE_EVENT)
    [error] = err.value.errors()
    assert error["type"] == "missing"
    assert error["loc"][-1] == "id"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("specversion", "0.3"),
        ("datacontenttype", "text/plain"),
        ("id", ""),
        ("tenant", ""),
        ("time", "2025-03-01T12:00:00"),  # naive: no offset
        ("extension", "x"),  # unknown attribute
    ],
)
def test_bad_attributes_are_rejected_by_name(field: str, value: Any) -> None:
    with pytest.raises(ValidationError) as err:
        device.DeviceOnlineEvent.model_validate(_body(**{field: value}))
    assert any(e["loc"][0] == field for e in err.value.errors())


def test_envelopes_are_immutable() -> None:
    env = SAMPLES[0]
    with pytest.raises(ValidationError, match="frozen"):
        env.id = "other"  # type: ignore[misc]


def test_non_utc_times_are_kept_as_sent() -> None:
    env = device.DeviceOnlineEvent.model_validate(_body(time="2025-03-01T13:00:00+01:00"))
    assert env.time == datetime(2025, 3, 1, 12, tzinfo=UTC)
    assert env.time.tzinfo == timezone(timedelta(hours=1))


def test_malformed_json_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"(?i)json|expected|unexpected"):
        from_json_bytes(b'{"id": ', DEVICE_EVENT)


_valid_segment = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)


@given(segments=st.lists(_valid_segment, min_size=2, max_size=4), version=st.integers(1, 99))
def test_well_formed_types_match_the_pattern(segments: list[str], version: int) -> None:
    assert re.fullmatch(EVENT_TYPE_PATTERN, ".".join(segments) + f".v{version}")


@given(st.text(max_size=40))
def test_the_generic_envelope_rejects_any_type_outside_the_pattern(event_type: str) -> None:
    body = _body(type=event_type)
    if re.fullmatch(EVENT_TYPE_PATTERN, event_type):
        Envelope[device.DeviceOnline].model_validate(body)
    else:
        with pytest.raises(ValidationError, match="type"):
            Envelope[device.DeviceOnline].model_validate(body)


@pytest.mark.parametrize(
    "event_type", ["Device.Status.v1", "device.status", "device.v1", "device.status.v0", ""]
)
def test_bad_type_strings_are_rejected(event_type: str) -> None:
    with pytest.raises(ValidationError, match="type"):
        Envelope[device.DeviceOnline].model_validate(_body(type=event_type))


# DP values are whatever JSON the device sent; orjson must carry them unchanged.
_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@given(value=_json_values, dp_id=st.integers(1, 255), t=st.integers(0, 2**53))
def test_any_dp_value_round_trips(value: Any, dp_id: int, t: int) -> None:
    data = device.DeviceStatusReported(
        device_id=DEVICE,
        origin=device.TuyaOrigin(protocol=4, push_time_ms=MS),
        dps=[device.DpReport(code="c", dp_id=dp_id, value=value, device_time_ms=t)],
    )
    env = device.DeviceStatusReportedEvent.build(data, source="/fleet/ingest", tenant=TENANT, region=REGION)
    parsed = from_json_bytes(to_json_bytes(env), DEVICE_EVENT)
    assert isinstance(parsed, device.DeviceStatusReportedEvent)
    assert parsed.data.dps[0].value == value
    assert parsed == env
