"""The dead letter the broker writes always validates as the contract event, whatever the original was."""

from __future__ import annotations

import base64

import pytest

from fleet_contracts import deadletter
from fleet_contracts.deadletter import MessageDeadLetteredEvent
from fleet_shared.pulsar.deadletter import dead_letter_command
from fleet_shared.pulsar.testing import FakeMessage

pytestmark = pytest.mark.unit


def dead_letter(raw: FakeMessage, error: BaseException | None = None) -> MessageDeadLetteredEvent:
    cmd = dead_letter_command(raw, error, subscription="status", topic="dlq", gave_up="rejected")
    assert cmd.destination == "dlq"
    assert isinstance(cmd.body, bytes)
    return MessageDeadLetteredEvent.model_validate_json(cmd.body)


def test_an_unreadable_body_is_kept_byte_for_byte_with_unknown_tenant() -> None:
    raw = FakeMessage(b"\xff not json", topic="t", properties={"traceparent": "00-ab-cd-01"})
    event = dead_letter(raw)
    assert base64.b64decode(event.data.payload_base64) == b"\xff not json"
    assert (event.tenant, event.region) == (deadletter.UNKNOWN, deadletter.UNKNOWN)
    assert (event.data.error_type, event.data.reason) == ("rejected", "rejected by the handler")
    cmd = dead_letter_command(raw, None, subscription="status", topic="dlq", gave_up="rejected")
    assert cmd.headers["traceparent"] == "00-ab-cd-01"  # the trace goes on into the dead letter


def test_the_same_message_dead_lettered_twice_keeps_its_event_id() -> None:
    raw = FakeMessage(b"{}", topic="t", properties={})
    assert dead_letter(raw).id == dead_letter(raw).id
    assert dead_letter(raw).id != dead_letter(FakeMessage(b"{}", topic="t", properties={})).id


def test_an_oversized_body_is_truncated_and_the_reason_says_so() -> None:
    raw = FakeMessage(b"x" * (deadletter.MAX_DEAD_PAYLOAD_BYTES + 10), topic="t", properties={})
    event = dead_letter(raw, ValueError("e" * 5000))
    assert len(base64.b64decode(event.data.payload_base64)) == deadletter.MAX_DEAD_PAYLOAD_BYTES
    assert event.data.error_type == "ValueError"
    assert len(event.data.reason) <= 1024
    assert event.data.reason.endswith(f"(payload truncated to {deadletter.MAX_DEAD_PAYLOAD_BYTES} bytes)")
