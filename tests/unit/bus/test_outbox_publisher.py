"""The outbox publisher every service's relay uses: each key's entries in order, keys in parallel, the
event id as a property."""

from __future__ import annotations

import asyncio

import pytest

from fleet_contracts.outbox import OutboxEntry
from fleet_shared.pulsar import OutboxPublisher

pytestmark = pytest.mark.unit


class RecordingBroker:
    """Stands in for `PulsarBroker.publish`: yields between sends, as a real send does."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, dict[str, str]]] = []

    async def publish(self, body: bytes, topic: str, *, key: str, headers: dict[str, str]) -> None:
        await asyncio.sleep(0.001 if key == "a" else 0)
        self.sent.append((key, body.decode(), headers))


async def test_the_publisher_keeps_each_keys_order() -> None:
    broker = RecordingBroker()
    entries = [OutboxEntry(f"id{i}", "t", key, f"{key}{i}".encode()) for i, key in enumerate("aabab")]
    await OutboxPublisher(broker).publish(entries)  # type: ignore[arg-type]
    assert [body for key, body, _ in broker.sent if key == "a"] == ["a0", "a1", "a3"]
    assert [body for key, body, _ in broker.sent if key == "b"] == ["b2", "b4"]
    assert {headers["event-id"] for _, _, headers in broker.sent} == {f"id{i}" for i in range(5)}
