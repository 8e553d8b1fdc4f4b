"""Which database errors count as an outage (retry the same input) rather than a fault of the input."""

from __future__ import annotations

import pytest
from pymongo.errors import (
    AutoReconnect,
    DuplicateKeyError,
    NetworkTimeout,
    OperationFailure,
    ServerSelectionTimeoutError,
    WriteError,
)

from fleet_shared.mongo import is_transient

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "error",
    [
        AutoReconnect("connection refused"),
        NetworkTimeout("timed out"),
        ServerSelectionTimeoutError("no servers"),
        OperationFailure("not primary", code=10107, details={"errorLabels": ["RetryableWriteError"]}),
    ],
)
def test_outages_are_transient(error: Exception) -> None:
    assert is_transient(error)


@pytest.mark.parametrize(
    "error",
    [
        DuplicateKeyError("E11000"),
        WriteError("document too large", code=10334),
        OperationFailure("bad filter", code=2),
        ValueError("not a database error"),
    ],
)
def test_faults_of_the_operation_are_not(error: Exception) -> None:
    assert not is_transient(error)
