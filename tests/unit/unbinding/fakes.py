"""In-memory implementations of unbinding's ports, and a Tuya stand-in that counts removals per device."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from pydantic import SecretStr

from fleet_contracts.unbinding import RefusalCause
from fleet_unbinding.domain import authorization as authz
from fleet_unbinding.domain.batch import Batch, BatchStatus, Tally
from fleet_unbinding.domain.quota import CounterKey, LimitOverride, OpenBlock, QuotaScope
from fleet_unbinding.domain.unbind import DeviceFacts, DeviceUnbind, UnbindState
from fleet_unbinding.ports import OutboxEntry, QrToken, TuyaRefused, TuyaUnreachable
from fleet_unbinding.service_layer.events import EventFactory
from fleet_unbinding.service_layer.handlers import Ports

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


class FakeBatchStore:
    def __init__(self) -> None:
        self.docs: dict[str, Batch] = {}
        self.outbox: dict[str, list[OutboxEntry]] = {}

    async def get(self, batch_id: str) -> Batch | None:
        return self.docs.get(batch_id)

    async def add(self, batch: Batch, outbox: Sequence[OutboxEntry]) -> bool:
        if batch.batch_id in self.docs:
            return False
        self.docs[batch.batch_id] = batch
        self.outbox[batch.batch_id] = list(outbox)
        return True

    async def save(self, batch: Batch, outbox: Sequence[OutboxEntry]) -> bool:
        current = self.docs.get(batch.batch_id)
        if current is None or current.version != batch.version - 1:
            return False
        self.docs[batch.batch_id] = batch
        self.outbox[batch.batch_id] += outbox
        return True

    async def running(self, limit: int) -> list[str]:
        return [b.batch_id for b in self.docs.values() if b.status is not BatchStatus.FINISHED][:limit]


class FakeUnbindStore:
    def __init__(self) -> None:
        self.docs: dict[str, DeviceUnbind] = {}
        self.outbox: dict[str, list[OutboxEntry]] = {}
        self.fail_next_save_of: set[str] = set()  # simulates a crash: the write does not land

    async def add_many(self, unbinds: Sequence[DeviceUnbind]) -> None:
        for u in unbinds:
            if u.id not in self.docs:
                self.docs[u.id] = u
                self.outbox[u.id] = []

    async def get(self, batch_id: str, device_id: str) -> DeviceUnbind | None:
        return self.docs.get(f"{batch_id}/{device_id}")

    async def save(self, unbind: DeviceUnbind, outbox: Sequence[OutboxEntry]) -> bool:
        current = self.docs.get(unbind.id)
        if current is None or current.version != unbind.version - 1:
            return False
        self.docs[unbind.id] = unbind
        self.outbox[unbind.id] += outbox
        return True

    async def of_batch(self, batch_id: str) -> list[DeviceUnbind]:
        return [u for u in self.docs.values() if u.batch_id == batch_id]

    async def open(self, batch_id: str) -> list[DeviceUnbind]:
        return [u for u in self.docs.values() if u.batch_id == batch_id and not u.state.final]

    async def refunds_due(self, limit: int) -> list[DeviceUnbind]:
        return [u for u in self.docs.values() if u.state is UnbindState.REFUSED and u.units_held][:limit]

    async def holding(self, key: CounterKey, block_id: str) -> int:
        at = list(QuotaScope).index(key.scope)  # `quota_blocks` follow `quota.counter_keys` order
        return sum(
            1 for u in self.docs.values() if len(u.quota_blocks) > at and u.quota_blocks[at] == block_id
        )

    async def tally(self, batch_id: str) -> tuple[int, Tally]:
        mine = [u for u in self.docs.values() if u.batch_id == batch_id]
        refused: dict[RefusalCause, int] = {}
        for u in mine:
            if u.state is UnbindState.REFUSED and u.cause is not None:
                refused[u.cause] = refused.get(u.cause, 0) + 1
        unbound = sum(u.state is UnbindState.UNBOUND for u in mine)
        return sum(not u.state.final for u in mine), Tally(unbound, refused)

    def of(self, batch_id: str) -> dict[str, DeviceUnbind]:
        return {u.device_id: u for u in self.docs.values() if u.batch_id == batch_id}


class FakeCounters:
    """Same semantics as the Mongo counters: conditional blocks, settled once, refunds once per unit."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.blocks: dict[str, dict[str, tuple[CounterKey, int, datetime]]] = {}
        self.refunds: dict[str, set[str]] = {}
        self.listed: dict[str, set[str]] = {}  # an earlier version's units, held by name (`units`)
        self.writes = 0  # counter writes (blocks reserved, settled, refunds)
        self.before_reserve: Callable[[], Awaitable[None]] | None = None  # lets a test interleave a race

    async def reserve_block(
        self, key: CounterKey, limit: int, want: int, block_id: str, until: datetime
    ) -> int:
        if self.before_reserve is not None:
            await self.before_reserve()
        n = min(want, limit - self.counts.get(key.id, 0))
        if n <= 0:
            return 0
        self.writes += 1
        self.counts[key.id] = self.counts.get(key.id, 0) + n
        self.blocks.setdefault(key.id, {})[block_id] = (key, n, until)
        return n

    async def settle(self, key: CounterKey, block_id: str, n: int, consumed: int) -> None:
        assert 0 <= consumed <= n
        if self.blocks.get(key.id, {}).pop(block_id, None) is not None:
            self.writes += 1
            self.counts[key.id] -= n - consumed

    async def refund(self, keys: Sequence[CounterKey], unit: str) -> None:
        for key in keys:
            done = self.refunds.setdefault(key.id, set())
            if key.id in self.counts and unit not in done:
                self.writes += 1
                done.add(unit)
                self.counts[key.id] -= 1

    async def refund_listed(self, keys: Sequence[CounterKey], unit: str) -> None:
        for key in keys:
            if unit in self.listed.get(key.id, set()):
                self.writes += 1
                self.listed[key.id].discard(unit)
                self.counts[key.id] -= 1

    def list_unit(self, key: CounterKey, unit: str) -> None:
        """A unit the earlier version reserved by name (its counter layout before blocks)."""
        self.listed.setdefault(key.id, set()).add(unit)
        self.counts[key.id] = self.counts.get(key.id, 0) + 1

    async def open_blocks(self) -> list[OpenBlock]:
        return [
            OpenBlock(key, block_id, n, until)
            for blocks in self.blocks.values()
            for block_id, (key, n, until) in blocks.items()
        ]

    async def used(self, key: CounterKey) -> int:
        return self.counts.get(key.id, 0)


class FakeLimits:
    def __init__(self) -> None:
        self.rows: list[LimitOverride] = []

    async def history(self, scope: QuotaScope, subject: str) -> list[LimitOverride]:
        return sorted(
            (o for o in self.rows if o.scope is scope and o.subject == subject), key=lambda o: o.seq
        )

    async def append(self, override: LimitOverride) -> bool:
        if any(
            (o.scope, o.subject, o.seq) == (override.scope, override.subject, override.seq) for o in self.rows
        ):
            return False
        self.rows.append(override)
        return True


class FakeAuthorizations:
    def __init__(self) -> None:
        self.rows: list[authz.AuthorizationRecord] = []

    async def records(self, product_id: str) -> list[authz.AuthorizationRecord]:
        return [r for r in self.rows if r.product_id == product_id]

    async def product(self, product_id: str) -> authz.ProductAuthorization:
        return authz.fold(product_id, await self.records(product_id))

    async def append(self, record: authz.AuthorizationRecord) -> bool:
        if any((r.product_id, r.seq) == (record.product_id, record.seq) for r in self.rows):
            return False
        self.rows.append(record)
        return True


@dataclass
class FakeTuya:
    """Devices as Tuya holds them; scripted errors per device; every removal that took effect counted."""

    devices: dict[str, DeviceFacts] = field(default_factory=dict)
    removals: dict[str, int] = field(default_factory=dict)
    # per device, errors the next removal calls raise (in order); "lost" = done but the answer was lost
    remove_script: dict[str, list[str]] = field(default_factory=dict)
    lookup_errors: dict[str, str] = field(default_factory=dict)
    failed_pairings: list[tuple[str, str | None]] = field(default_factory=list)

    def add(self, device_id: str, product_id: str, owner: str | None = "u1", online: bool = True) -> None:
        self.devices[device_id] = DeviceFacts(device_id, product_id, owner, 1_700_000_000, online)

    async def lookup(self, device_id: str) -> DeviceFacts | None:
        if device_id in self.lookup_errors:
            raise TuyaRefused(self.lookup_errors[device_id])
        return self.devices.get(device_id)

    async def remove(self, device_id: str, *, reset: bool) -> None:
        script = self.remove_script.get(device_id, [])
        step = script.pop(0) if script else None
        if step == "lost":
            self._unbind(device_id)
            raise TuyaUnreachable("answer lost")
        if step is not None:
            raise TuyaRefused(step)
        if device_id not in self.devices:
            raise TuyaRefused("2010")
        self._unbind(device_id)

    def _unbind(self, device_id: str) -> None:
        self.removals[device_id] = self.removals.get(device_id, 0) + 1
        d = self.devices[device_id]
        self.devices[device_id] = replace(d, owner_uid=None)

    async def issue(self, *, uid: str, home_id: str | None, time_zone_id: str) -> QrToken:
        return QrToken("tok1", SecretStr("EUtok1sec"), T0 + timedelta(minutes=10))

    async def failed_devices(self, token: str) -> list[tuple[str, str | None]]:
        return list(self.failed_pairings)


@dataclass
class World:
    ports: Ports
    tuya: FakeTuya
    clock: FakeClock
    batches: FakeBatchStore
    unbinds: FakeUnbindStore
    counters: FakeCounters
    limits: FakeLimits
    authorizations: FakeAuthorizations


async def _no_sleep(_: float) -> None:
    return None


def world(*, approval_threshold: int = 100, max_calls: int = 3) -> World:
    clock = FakeClock()
    tuya = FakeTuya()
    batches, unbinds, counters = FakeBatchStore(), FakeUnbindStore(), FakeCounters()
    limits, auths = FakeLimits(), FakeAuthorizations()
    ports = Ports(
        batches=batches,
        unbinds=unbinds,
        counters=counters,
        limits=limits,
        authorizations=auths,
        devices=tuya,
        events=EventFactory(tenant="t1", region="eu"),
        clock=clock,
        approval_threshold=approval_threshold,
        max_calls=max_calls,
        sleep=_no_sleep,
    )
    return World(ports, tuya, clock, batches, unbinds, counters, limits, auths)
