"""The simulator's ports: where its push messages go (the Pulsar adapter and the in-memory sink)."""

from __future__ import annotations

from typing import Protocol


class PushSink(Protocol):
    async def send(self, key: str, payload: bytes, properties: dict[str, str]) -> str:
        """Publishes one message keyed by `key` (the device id); returns the broker's message id once
        the broker confirmed it."""
        ...
