"""The configuration a broker shares with its routers, subscribers and publishers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from faststream._internal.configs import BrokerConfig
from faststream.exceptions import IncorrectState

if TYPE_CHECKING:
    from pulsar import asyncio as pa

    from .metrics import BusMetrics


@dataclass(kw_only=True)
class PulsarBrokerConfig(BrokerConfig):
    _client: pa.Client | None = field(default=None, init=False, repr=False)
    # the bus's RED metrics (`metrics.py`); None: not counted
    bus_metrics: BusMetrics | None = field(default=None, repr=False)

    @property
    def client(self) -> pa.Client:
        if self._client is None:
            raise IncorrectState("PulsarBroker is not connected: call `await broker.connect()` first")
        return self._client

    def connect(self, client: pa.Client) -> None:
        self._client = client

    def disconnect(self) -> None:
        self._client = None
