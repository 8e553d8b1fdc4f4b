"""status's ports: what the service layer and the views need from the outside world, as Protocols.

The Mongo repositories (`adapters/shadows.py`, `history.py`, `schemas.py`), the outbox
publisher, the Tuya client use (`adapters/tuya.py`) and the unit tests' fakes all implement these, so
a fake is checked against the same contract as the real thing. The values that cross the repository seam
(`StoredShadow`, `ShadowWrite`) live here too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from fleet_contracts.outbox import OutboxEntry
from fleet_shared.tuya.models import DeviceDetails, DeviceSpecification
from fleet_status.domain.dp_schema import DpSchema
from fleet_status.domain.facts import CloudDevice
from fleet_status.domain.journal import Journal
from fleet_status.domain.shadow import AcceptedReading, PresenceReport, Shadow

Document = dict[str, Any]


@dataclass(slots=True)
class StoredShadow:
    """A shadow as stored, with the events its last write recorded and that may not be relayed yet, and the
    history rows it holds until they move to their buckets (`domain/journal.py`)."""

    shadow: Shadow
    outbox: list[OutboxEntry] = field(default_factory=list)
    journal: Journal = field(default_factory=Journal)


@dataclass(frozen=True, slots=True)
class ShadowWrite:
    shadow: Shadow  # the new state, `version` already bumped
    expected_version: int  # what the write is conditional on (0: the document must not exist yet)
    outbox: list[OutboxEntry]
    write_id: str
    journal: Journal = field(default_factory=Journal)  # the whole journal as it is after this write


# --- the write side (service_layer) ------------------------------------------------------------------------


class Settlement(Protocol):
    """How the writer settles the message a fact came from (a `PulsarMessage`)."""

    async def ack(self) -> None: ...

    async def nack(self) -> None: ...


class ShadowRepository(Protocol):
    """Shadows with their outbox: one conditional single-document write per device."""

    async def load(self, device_ids: Sequence[str]) -> dict[str, StoredShadow]: ...

    async def write(self, writes: Sequence[ShadowWrite], now: datetime) -> set[str]:
        """Apply the writes; the device ids whose write lost a race (their document moved on meanwhile)."""
        ...

    async def clear_outbox(self, relayed: Mapping[str, Sequence[OutboxEntry]]) -> None:
        """Remove these relayed entries from their documents' outboxes."""
        ...

    async def with_outbox(self, limit: int) -> list[StoredShadow]:
        """Shadows whose outbox still holds events (after a crash between write and relay)."""
        ...


class StaleShadows(Protocol):
    """The shadows reconciliation refreshes from the OpenAPI."""

    async def stale(self, before: datetime, limit: int) -> list[str]: ...

    async def touch(self, device_ids: Sequence[str], now: datetime) -> None:
        """Mark shadows fresh without a state change (the cloud agreed with them)."""
        ...


class DueShadows(Protocol):
    """Shadows whose inactivity deadline has passed (read from an index, never a scan of every shadow)."""

    async def due(self, now_ms: int, limit: int) -> list[tuple[str, int]]:
        """(device id, its deadline), at most `limit`."""
        ...


class HistoryRepository(Protocol):
    """DP history and presence timeline (where journals move to); a replayed report adds nothing."""

    async def add(
        self,
        readings: Mapping[str, Sequence[AcceptedReading]],
        presence: Mapping[str, Sequence[PresenceReport]],
        now: datetime,
    ) -> None: ...


class SchemaRepository(Protocol):
    """Product DP schemas as last fetched, with when."""

    async def get(self, product_id: str) -> tuple[DpSchema, datetime] | None: ...

    async def put(self, schema: DpSchema, fetched_at: datetime) -> None: ...


class SchemaSource(Protocol):
    """Product id -> DP schema (None: unknown for now, values stay untyped)."""

    async def get(self, product_id: str | None, device_id: str) -> DpSchema | None: ...


class EventPublisher(Protocol):
    async def publish(self, entries: Sequence[OutboxEntry]) -> None:
        """Publish every entry and return once Pulsar has persisted them all (raise if any failed)."""
        ...


class CloudDevices(Protocol):
    """The cloud's view of one device, or None when the cloud could not say."""

    async def fetch(self, device_id: str) -> CloudDevice | None: ...


# --- Tuya's OpenAPI as status uses it (`TuyaOpenApiClient` implements both) --------------------------------


class DpSpecifications(Protocol):
    async def get_specifications(self, device_id: str, *, version: str = "v1.0") -> DeviceSpecification: ...


class DeviceDetailsApi(Protocol):
    async def get_device(self, device_id: str) -> DeviceDetails: ...


class OpenApi(DpSpecifications, DeviceDetailsApi, Protocol):
    """The part of `TuyaOpenApiClient` status calls."""


# --- the read side (views) ----------------------------------------------------------------------------


class ShadowQueries(Protocol):
    async def get(self, device_id: str) -> Document | None: ...

    async def list(
        self,
        *,
        product_id: str | None,
        home_id: str | None,
        online: bool | None,
        after: str | None,
        limit: int,
        products: frozenset[str] | None = None,
    ) -> list[Document]:
        """Shadows in `_id` order after `after`; `products` narrows to these PIDs (a caller's product scope,
        None: every product), also when `product_id` is given."""
        ...


class TimelineQueries(Protocol):
    """DP history and presence rows (journal and buckets), newest first, within retention, after a
    `(t, _id)` cursor."""

    async def dp_history_page(
        self,
        device_id: str,
        code: str | None,
        *,
        since_ms: int,
        until_ms: int,
        before: tuple[int, str] | None,
        limit: int,
        now: datetime,
    ) -> list[Document]: ...

    async def presence_page(
        self,
        device_id: str,
        *,
        since_ms: int,
        until_ms: int,
        before: tuple[int, str] | None,
        limit: int,
        now: datetime,
    ) -> list[Document]: ...
