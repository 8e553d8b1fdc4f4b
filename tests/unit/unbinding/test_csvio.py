"""CSV upload of device lists and CSV export of result records."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from fleet_unbinding.csvio import MAX_UPLOAD_BYTES, CsvError, parse_device_ids, records_csv

pytestmark = pytest.mark.unit


def test_a_bare_column_and_a_named_column_are_both_device_lists() -> None:
    assert parse_device_ids("d1\n d2 \n\n# returned on Monday\nd3\n") == ["d1", "d2", "d3"]
    assert parse_device_ids(b"\xef\xbb\xbfname,Device_ID\ncam,d1\nnvr,d2\n") == ["d1", "d2"]


def test_duplicates_are_kept_for_the_request_validation_to_name() -> None:
    assert parse_device_ids("d1\nd1\n") == ["d1", "d1"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "no device ids"),
        (b"a,b\n1,2\n", "device_id"),
        (b"device_id,name\n,cam\n", "row 2"),
        (b"\xff\xfe", "UTF-8"),
        (b"d" * (MAX_UPLOAD_BYTES + 1), "larger"),
    ],
)
def test_what_is_not_a_device_list_is_refused_with_where(data: bytes, message: str) -> None:
    with pytest.raises(CsvError, match=message):
        parse_device_ids(data)


def test_records_export_with_a_fixed_header_and_no_formula_cells() -> None:
    at = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    text = records_csv(
        [
            {"at": at, "day": "2026-11-29", "batch_id": "b1", "device_id": "d1", "result": "unbound"},
            {
                "at": at,
                "device_id": "=HYPERLINK(1)",
                "result": "refused",
                "cause": "tuya_error",
                "tuya_error_code": "2010",
            },
        ]
    )
    lines = text.splitlines()
    assert lines[0].startswith("at,day,batch_id,device_id,product_id,operator_id")
    assert lines[1].startswith("2026-11-29T12:00:00+00:00,2026-11-29,b1,d1,")
    assert "'=HYPERLINK(1)" in lines[2]
    assert "tuya_error,2010" in lines[2]
