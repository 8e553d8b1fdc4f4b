"""The device-topic consumer's cheap filter: only the project's own events are decoded."""

from __future__ import annotations

import pytest

from fleet_shared.pulsar.device_events import of_tenant

pytestmark = pytest.mark.unit


def test_the_consumer_skips_other_projects_events_before_decoding_them() -> None:
    assert of_tenant(b'{"tenant": "mine", "type": "device.online.v1"}', "mine")
    assert not of_tenant(b'{"tenant": "theirs"}', "mine")
    assert of_tenant(b"not json", "mine")  # the decoder dead-letters it
    # no tenant named (or not as text): not an event of another project but a broken one, dead-lettered too
    assert of_tenant(b'{"type": "device.online.v1"}', "mine")
    assert of_tenant(b'{"tenant": 7}', "mine")
    assert of_tenant(b"[1, 2]", "mine")
