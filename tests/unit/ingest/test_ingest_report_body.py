"""A status report's event body written directly (`report_body`) is byte for byte what the contract models
write, and every report it cannot vouch for goes through the models (which validate and dead-letter)."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from fleet_contracts import topics
from fleet_contracts.envelope import to_json_bytes
from fleet_ingest.domain.dedup import dedup_key, event_id
from fleet_ingest.domain.mapping import push_time_ms, to_event, tuya_message_id
from fleet_ingest.domain.model import DeadLetter, InvalidTuyaMessage, Project, Publish, TuyaDelivery
from fleet_ingest.domain.report_body import status_report_body
from fleet_ingest.service_layer.handlers import handle_delivery
from fleet_shared.tuya.codec import DecodedMessage, EncryptionMode, PushCodec
from fleet_shared.tuya.errors import PushMessageRejected
from tests.unit.ingest.tuya_samples import ACCESS_ID, DEV, PID, SECRET, T

pytestmark = pytest.mark.unit

PROJECT = Project(access_id=ACCESS_ID, region="eu")
CODEC = PushCodec(SECRET)


def delivery(data: dict[str, Any], *, t: int | None = T, publish_ms: int = T + 5) -> TuyaDelivery:
    encoded = CODEC.encode(data, protocol=4, mode=EncryptionMode.ECB, t=t)
    return TuyaDelivery(
        payload=encoded.payload(),
        properties=encoded.properties,
        message_id="1:2:3",
        topic=topics.tuya_event_topic(ACCESS_ID) + "-partition-0",
        key=DEV,
        publish_time_ms=publish_ms,
    )


def both_paths(data: dict[str, Any], **kw: Any) -> tuple[bytes | None, bytes | None]:
    """(direct body or None, the models' body or None when they reject the report)."""
    d = delivery(data, **kw)
    decoded: DecodedMessage = CODEC.decode(d.payload, d.properties)
    eid = event_id(ACCESS_ID, dedup_key(decoded))
    direct = status_report_body(
        decoded.message,
        project=PROJECT,
        event_id=eid,
        push_ms=push_time_ms(decoded, d.publish_time_ms),
        message_id=tuya_message_id(decoded),
    )
    try:
        modelled: bytes | None = to_json_bytes(
            to_event(decoded, project=PROJECT, event_id=eid, fallback_time_ms=d.publish_time_ms)
        )
    except InvalidTuyaMessage:
        modelled = None
    return direct, modelled


def report(*items: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"dataId": "d-1", "devId": DEV, "productKey": PID, "status": list(items), **top}


#: Reports the direct path writes itself.
DIRECT = {
    "plain": report({"code": "switch_1", "value": True, "t": T, "1": "true"}, {"code": "temp", "value": 215}),
    "every scalar": report(
        {"code": "a", "value": None},
        {"code": "b", "value": False},
        {"code": "c", "value": -(2**63)},
        {"code": "d", "value": 2**63 - 1},
        {"code": "e", "value": 21.5},
        {"code": "f", "value": 'tëxt "quoted" \\ \u2028 \U0001f600'},
        {"code": "g", "value": ""},
        {"code": "h", "value": 1e-300},
    ),
    "no product, no data id": {"devId": DEV, "status": [{"code": "x", "value": 1}]},
    "item time in seconds": report({"code": "x", "value": 1, "t": T // 1000}),
    "item time zero": report({"code": "x", "value": 1, "t": 0}),
    "item time negative": report({"code": "x", "value": 1, "t": -5}),
    "dp id limits": report({"code": "x", "value": 1, "1": "1"}, {"code": "y", "value": 2, "255": "2"}),
    "longest ids": report({"code": "c" * 64, "value": 1}, devId="d" * 64, productKey="p" * 64),
    "long data id truncated": report({"code": "x", "value": 1}, dataId="i" * 300),
    "push time with ms": report({"code": "x", "value": 1}),
    "255 dps": report(*({"code": f"c{n}", "value": n} for n in range(255))),
    "item time far ahead": report({"code": "x", "value": 1, "t": 2**62}),
    "extra keys": report({"code": "x", "value": 1, "other": [1]}, extra={"a": 1}),
}

#: Reports it leaves to the models (which publish some and reject others).
MODELLED = {
    "empty status": report(),
    "256 dps": report(*({"code": f"c{n}", "value": n} for n in range(256))),
    "code too long": report({"code": "c" * 65, "value": 1}),
    "device id too long": report({"code": "x", "value": 1}, devId="d" * 65),
    "product id too long": report({"code": "x", "value": 1}, productKey="p" * 65),
    "empty product id": report({"code": "x", "value": 1}, productKey=""),
    "empty code": report({"code": "", "value": 1}),
    "dp id 0": report({"code": "x", "value": 1, "0": "1"}),
    "dp id 256": report({"code": "x", "value": 1, "256": "1"}),
    "list value": report({"code": "x", "value": [1, {"a": 2}]}),
    "object value": report({"code": "x", "value": {"r": 1, "g": [2]}}),
}


@pytest.mark.parametrize("name", sorted(DIRECT))
def test_direct_body_is_byte_identical_to_the_models(name: str) -> None:
    direct, modelled = both_paths(DIRECT[name])
    assert direct is not None, "this report should take the direct path"
    assert direct == modelled


@pytest.mark.parametrize("name", sorted(MODELLED))
def test_reports_the_direct_path_cannot_vouch_for_go_through_the_models(name: str) -> None:
    direct, _ = both_paths(MODELLED[name])
    assert direct is None
    outcome = handle_delivery(delivery(MODELLED[name]), CODEC, PROJECT)
    assert isinstance(outcome, Publish | DeadLetter)


@pytest.mark.parametrize(
    ("t", "publish_ms"),
    [(None, T + 5), (T // 1000, 0), (0, T), (None, 0), (253_402_300_799_000, 1), (T + 999, 1)],
)
def test_push_times_write_the_same_envelope_time(t: int | None, publish_ms: int) -> None:
    direct, modelled = both_paths(report({"code": "x", "value": 1}), t=t, publish_ms=publish_ms)
    assert direct is not None
    assert direct == modelled


def test_push_time_beyond_the_year_9999_is_left_to_the_models() -> None:
    direct, modelled = both_paths(report({"code": "x", "value": 1}), t=253_402_300_800_000)
    assert direct is None
    assert modelled is None  # and they reject it: dead-lettered


def _random_value(rng: random.Random) -> Any:
    return rng.choice(
        [
            None,
            rng.random() < 0.5,
            rng.randint(-(2**64), 2**64),
            rng.uniform(-1e9, 1e9),
            "".join(chr(rng.randint(1, 0x2FFF)) for _ in range(rng.randint(0, 12))),
            rng.randint(-100, 100),
        ]
        + [[rng.randint(0, 9)]] * (rng.random() < 0.2)
    )


def test_random_reports_agree_with_the_models() -> None:
    rng = random.Random(15)
    direct_count = rejected = 0
    for n in range(600):
        items = []
        for m in range(rng.randint(0, 6)):
            item: dict[str, Any] = {
                "code": "c" * rng.choice([1, 8, 64, 64, 64, 65]),
                "value": _random_value(rng),
            }
            if rng.random() < 0.7:
                item["t"] = rng.choice([T + m, T // 1000, -1, 0, 2**63 - 1])
            if rng.random() < 0.5:
                item[str(rng.choice([1, 2, 255, 255, 255, 256, 0]))] = "v"
            items.append(item)
        data = report(*items, dataId=f"d-{n}", devId=rng.choice([DEV, "d" * 65]))
        try:
            direct, modelled = both_paths(data)
        except (PushMessageRejected, orjson.JSONEncodeError):
            rejected += 1  # an integer beyond 64 bits: refused by the codec or the models, not ours
            continue
        if direct is not None:
            direct_count += 1
            assert direct == modelled, data
    assert direct_count > 50
    assert rejected < 300  # the direct path was really exercised
