"""A protocol 4 status report's event body written directly, without the contract models on the way.

Status reports are nearly all of Tuya's stream, and building `DeviceStatusReportedEvent` through pydantic
(payload, DP reports, origin, envelope) and dumping it again cost more than decrypting and parsing the push
(bench/ingest.py's profile: about half of the CPU per message). Here the same JSON is written from the
parsed report in one `orjson.dumps`: same fields, same order, same time format (orjson's `OPT_UTC_Z` writes
an aware UTC datetime as pydantic's JSON mode does). Only a report every contract limit is known to hold for
takes this path; anything else (a long code, a DP id out of range, a nested value, a time out of range, ...)
returns None and goes through the models, which validate it and dead-letter what does not fit. A unit test
holds both paths byte-identical over valid, edge and invalid reports.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import orjson

from fleet_contracts import device as ev
from fleet_contracts.envelope import dataschema_for
from fleet_ingest.domain.model import Project
from fleet_shared.tuya import messages as tm

STATUS_REPORTED = ev.DeviceStatusReportedEvent.event_type()
_DATASCHEMA = dataschema_for(STATUS_REPORTED)

# The contract's limits (fleet_contracts._base), for what this path accepts without the models.
_MAX_ID = 64  # DeviceId, ProductId, DpCode
_MAX_DPS = 255
_MAX_DP_ID = 255
_I64 = 2**63
# Below datetime's year 10000, so the envelope time is representable (the models reject beyond).
_MAX_TIME_MS = 253_402_300_799_000
_SECONDS_LIMIT = 100_000_000_000  # as mapping.millis: below this a Tuya time is in seconds


def project_fits(project: Project) -> bool:
    """The envelope's own limits on what every event of `project` carries (checked once, not per report)."""
    return (
        1 <= len(project.access_id) <= 64
        and 1 <= len(project.region) <= 16
        and 1 <= len(project.source) <= 256
    )


def _id_fits(value: object) -> bool:
    return type(value) is str and 1 <= len(value) <= _MAX_ID


def _scalar(value: object) -> bool:
    """A DP value this path writes as is: the JSON scalars (containers go through the models)."""
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return True
    if kind is int:
        return -_I64 <= value < _I64  # type: ignore[operator]
    return kind is float and math.isfinite(value)  # type: ignore[arg-type]


def _millis(value: int) -> int:
    return value * 1000 if value < _SECONDS_LIMIT else value


def status_report_body(
    message: tm.TuyaMessage,
    *,
    project: Project,
    event_id: str,
    push_ms: int,
    message_id: str | None,
) -> bytes | None:
    """The `device.status.reported.v1` body for a status report, byte for byte what
    `to_json_bytes(to_event(...))` writes; None when the report needs the models (see the module doc)."""
    if type(message) is not tm.StatusReport:
        return None
    items = message.status
    device_id, product_id = message.dev_id, message.product_key
    if not items or len(items) > _MAX_DPS or not _id_fits(device_id):
        return None
    if product_id is not None and not _id_fits(product_id):
        return None
    if not 0 <= push_ms <= _MAX_TIME_MS or (message_id is not None and len(message_id) > 128):
        return None
    dps: list[dict[str, Any]] = []
    for item in items:
        code, value, t = item.code, item.value, item.t
        if not _id_fits(code) or not _scalar(value):
            return None
        try:
            dp_id = item.dp_id
        except ValueError:  # a digit key int() cannot read: the models say what is wrong
            return None
        if dp_id is not None and not 1 <= dp_id <= _MAX_DP_ID:
            return None
        if t is not None and type(t) is not int:
            return None
        if t is None or t < 0:
            device_time = push_ms
        elif t < _I64:
            device_time = _millis(t)
        else:
            return None
        dps.append({"code": code, "dp_id": dp_id, "value": value, "device_time_ms": device_time})
    return orjson.dumps(
        {
            "specversion": "1.0",
            "id": event_id,
            "source": project.source,
            "type": STATUS_REPORTED,
            "subject": device_id,
            "time": datetime.fromtimestamp(push_ms / 1000, UTC),
            "datacontenttype": "application/json",
            "dataschema": _DATASCHEMA,
            "tenant": project.access_id,
            "region": project.region,
            "data": {
                "device_id": device_id,
                "product_id": product_id,
                "origin": {
                    "protocol": 4,
                    "biz_code": None,
                    "push_time_ms": push_ms,
                    "message_id": message_id,
                },
                "dps": dps,
            },
        },
        option=orjson.OPT_UTC_Z,
    )
