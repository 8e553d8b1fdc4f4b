"""The ports of the unbinding service: what the handlers need from storage, Tuya, the bus and the clock.

Adapters (Mongo, the Tuya OpenAPI client, Pulsar) implement them; unit tests use in-memory fakes.
Every write that changes a batch or a device carries the events it causes (`OutboxEntry`) in the same
single-document write; `save` methods are conditional on the version read and return False on a lost race.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from pydantic import SecretStr

from fleet_contracts.outbox import OutboxEntry
from fleet_unbinding.domain.authorization import AuthorizationRecord, ProductAuthorization
from fleet_unbinding.domain.batch import Batch, Tally
from fleet_unbinding.domain.quota import CounterKey, LimitOverride, OpenBlock, QuotaScope
from fleet_unbinding.domain.unbind import DeviceFacts, DeviceUnbind


class Clock(Protocol):
    def __call__(self) -> datetime: ...


class TuyaRefused(Exception):
    """Tuya answered the call with an error code (definitive or not: the domain decides)."""

    def __init__(self, code: str | None) -> None:
        super().__init__(f"Tuya error {code}")
        self.code = code


class TuyaUnreachable(Exception):
    """No usable answer (network, 5xx, malformed): whether the call ran is unknown."""


class Devices(Protocol):
    """Tuya's view of devices (OpenAPI)."""

    async def lookup(self, device_id: str) -> DeviceFacts | None:
        """The device now; None when Tuya does not know it (2010). Raises TuyaRefused / TuyaUnreachable."""

    async def remove(self, device_id: str, *, reset: bool) -> None:
        """Unbind (and factory-reset when `reset`). Raises TuyaRefused / TuyaUnreachable."""


@dataclass(frozen=True, slots=True)
class QrToken:
    token: str  # the bare token: matches scans, safe to store
    assembled: SecretStr  # region + token + secret: goes into the QR payload once, never stored or logged
    expires_at: datetime | None


class PairingTokens(Protocol):
    """Tuya pairing tokens for QR sessions, and the devices that failed to pair with one."""

    async def issue(self, *, uid: str, home_id: str | None, time_zone_id: str) -> QrToken: ...

    async def failed_devices(self, token: str) -> list[tuple[str, str | None]]:
        """(device id, Tuya error code) of every device that failed to pair with the token."""


class AuthorizationStore(Protocol):
    async def product(self, product_id: str) -> ProductAuthorization:
        """The product's current authorizations (unregistered: `registered` False)."""

    async def append(self, record: AuthorizationRecord) -> bool:
        """Append the record; False when its `seq` is taken (someone appended first: fold again)."""

    async def records(self, product_id: str) -> list[AuthorizationRecord]: ...


class QuotaLimits(Protocol):
    async def history(self, scope: QuotaScope, subject: str) -> list[LimitOverride]: ...

    async def append(self, override: LimitOverride) -> bool:
        """Append the override; False when its `seq` is taken."""


class QuotaCounters(Protocol):
    """Daily counters (see `domain.quota`): blocks of units, each reserved and settled with one atomic
    conditional update of its counter; refunds marked per unit."""

    async def reserve_block(
        self, key: CounterKey, limit: int, want: int, block_id: str, until: datetime
    ) -> int:
        """Reserve up to `want` units (as many as `limit` leaves) as block `block_id`, listed with its size
        and `until`; returns the units reserved (0: the counter is full)."""

    async def settle(self, key: CounterKey, block_id: str, n: int, consumed: int) -> None:
        """Close the block: give back its `n - consumed` units and unlist it (only while it is listed:
        settling twice changes nothing)."""

    async def refund(self, keys: Sequence[CounterKey], unit: str) -> None:
        """Give back one unit in each counter, once per `unit` (idempotent)."""

    async def refund_listed(self, keys: Sequence[CounterKey], unit: str) -> None:
        """Give back a unit an earlier version reserved by name (listed in the counter's `units`), in each
        counter where it is still listed, and unlist it: idempotent, and a unit never listed (its
        reservation did not land) gives nothing back."""

    async def open_blocks(self) -> list[OpenBlock]:
        """Every block still listed (unsettled)."""

    async def used(self, key: CounterKey) -> int: ...


class BatchStore(Protocol):
    async def get(self, batch_id: str) -> Batch | None: ...

    async def add(self, batch: Batch, outbox: Sequence[OutboxEntry]) -> bool:
        """Insert a new batch; False when the id exists."""

    async def save(self, batch: Batch, outbox: Sequence[OutboxEntry]) -> bool:
        """Write `batch` (its `version` already bumped) if the stored version is `batch.version - 1`."""

    async def running(self, limit: int) -> list[str]:
        """Ids of batches not finished (recovery after a restart)."""


class UnbindStore(Protocol):
    async def add_many(self, unbinds: Sequence[DeviceUnbind]) -> None:
        """Insert the devices of a batch; those already there are left as they are."""

    async def get(self, batch_id: str, device_id: str) -> DeviceUnbind | None: ...

    async def save(self, unbind: DeviceUnbind, outbox: Sequence[OutboxEntry]) -> bool:
        """Write `unbind` (its `version` already bumped) if the stored version is `unbind.version - 1`."""

    async def of_batch(self, batch_id: str) -> list[DeviceUnbind]:
        """Every device of the batch, whatever its state."""

    async def open(self, batch_id: str) -> list[DeviceUnbind]:
        """Devices of the batch without a result yet."""

    async def refunds_due(self, limit: int) -> list[DeviceUnbind]:
        """Refused devices whose reserved units were not given back yet."""

    async def holding(self, key: CounterKey, block_id: str) -> int:
        """How many devices took a unit of this block of counter `key` (their state names it)."""

    async def tally(self, batch_id: str) -> tuple[int, Tally]:
        """(devices still open, results so far) of a batch."""
