"""The device-topic consumer's cheap filter: only the project's own events are decoded."""

from __future__ import annotations

import pytest

from fleet_ota.entrypoints.consumer import _of_tenant

pytestmark = pytest.mark.unit


def test_the_consumer_skips_other_projects_events_before_decoding_them() -> None:
    assert _of_tenant(b'{"tenant": "mine", "type": "device.online.v1"}', "mine")
    assert not _of_tenant(b'{"tenant": "theirs"}', "mine")
    assert _of_tenant(b"not json", "mine")  # the decoder dead-letters it
