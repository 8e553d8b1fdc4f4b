"""CSV in and out: device lists uploaded by operators, and result records exported for auditors.

Upload: one device id per row, either a bare column or a column named `device_id` (also `devId`, `id`)
among others; blank rows and surrounding spaces are ignored, `#` starts a comment row. Duplicates are kept
so the request validation names them (a batch must not silently shrink). Export: one row per record with a
fixed header; cells that a spreadsheet would run as a formula are prefixed with `'`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

DEVICE_COLUMNS = ("device_id", "devid", "id")
MAX_UPLOAD_BYTES = 256 * 1024
RECORD_COLUMNS = (
    "at",
    "day",
    "batch_id",
    "device_id",
    "product_id",
    "operator_id",
    "mode",
    "result",
    "cause",
    "tuya_error_code",
    "detail",
    "reconciled",
)


class CsvError(ValueError):
    """The upload is not a device list; the message says where."""


def parse_device_ids(data: bytes | str) -> list[str]:
    raw = data.encode() if isinstance(data, str) else data
    if len(raw) > MAX_UPLOAD_BYTES:
        raise CsvError(f"the file is larger than {MAX_UPLOAD_BYTES} bytes")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise CsvError("the file is not UTF-8 text") from None
    rows = [
        [cell.strip() for cell in row]
        for row in csv.reader(io.StringIO(text))
        if any(cell.strip() for cell in row) and not row[0].strip().startswith("#")
    ]
    if not rows:
        raise CsvError("the file holds no device ids")
    header = [cell.lower() for cell in rows[0]]
    column = next((header.index(name) for name in DEVICE_COLUMNS if name in header), None)
    if column is None:
        if len(rows[0]) != 1:
            raise CsvError("name the device id column `device_id`, or give one id per row")
        column, body, first_line = 0, rows, 1
    else:
        body, first_line = rows[1:], 2
    ids = []
    for n, row in enumerate(body, start=first_line):
        if column >= len(row) or not row[column]:
            raise CsvError(f"row {n} has no device id")
        ids.append(row[column])
    return ids


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    text = str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def records_csv(records: Iterable[Mapping[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(RECORD_COLUMNS)
    for record in records:
        writer.writerow([_cell(record.get(column)) for column in RECORD_COLUMNS])
    return out.getvalue()
