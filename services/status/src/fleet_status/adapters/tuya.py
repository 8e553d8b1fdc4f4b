"""Tuya's OpenAPI as status uses it: product DP schemas (cached) and the cloud's view of a device."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fleet_contracts.tuya import DpType
from fleet_shared.tuya.errors import TuyaDataNotFoundError, TuyaDeviceNotFoundError, TuyaError
from fleet_shared.tuya.models import DeviceSpecification, DpSpec
from fleet_status.domain.dp_schema import DpDefinition, DpSchema
from fleet_status.domain.facts import CloudDevice
from fleet_status.ports import DeviceDetailsApi, DpSpecifications, SchemaRepository

log = logging.getLogger(__name__)

# A product whose schema could not be fetched is asked again after this long, not on every report.
RETRY_FAILED_SCHEMA_S = 60.0


def _definition(spec: DpSpec) -> DpDefinition:
    values: Any = spec.values
    dp_type = spec.type if isinstance(spec.type, DpType) else None
    return DpDefinition(
        code=spec.code,
        dp_id=spec.dp_id,
        type=dp_type,
        scale=int(getattr(values, "scale", 0) or 0),
        min=getattr(values, "min", None),
        max=getattr(values, "max", None),
        unit=getattr(values, "unit", None),
        range=tuple(getattr(values, "range", ()) or ()),
        labels=tuple(getattr(values, "label", ()) or ()),
        maxlen=getattr(values, "maxlen", None),
    )


def schema_from_specification(product_id: str, spec: DeviceSpecification) -> DpSchema:
    """Status DPs first: they describe what the device reports; functions fill in the rest."""
    dps: dict[str, DpDefinition] = {}
    for item in [*spec.functions, *spec.status]:
        dps[item.code] = _definition(item)
    return DpSchema(product_id=product_id, dps=dps)


@dataclass
class _Entry:
    schema: DpSchema | None
    fetched: float  # monotonic


@dataclass
class SchemaCache:
    """Product id -> DP schema: memory, then the database, then the specifications API (once per product).

    The schema is fetched through one device of the product (the API is per device). When the API fails the
    product is typed as unknown for a while and asked again later; reports are never held back for it.
    """

    api: DpSpecifications | None
    store: SchemaRepository | None
    ttl_s: float = 24 * 3600.0
    monotonic: Callable[[], float] = time.monotonic
    _entries: dict[str, _Entry] = field(default_factory=dict)
    _inflight: dict[str, asyncio.Task[DpSchema | None]] = field(default_factory=dict)

    async def get(self, product_id: str | None, device_id: str) -> DpSchema | None:
        if not product_id:
            return None
        entry = self._entries.get(product_id)
        now = self.monotonic()
        if entry is not None:
            age = now - entry.fetched
            if (entry.schema is not None and age < self.ttl_s) or (
                entry.schema is None and age < RETRY_FAILED_SCHEMA_S
            ):
                return entry.schema
        task = self._inflight.get(product_id)
        if task is None:
            task = self._inflight[product_id] = asyncio.ensure_future(self._fetch(product_id, device_id))
            task.add_done_callback(lambda _: self._inflight.pop(product_id, None))
        return await asyncio.shield(task)

    async def _fetch(self, product_id: str, device_id: str) -> DpSchema | None:
        if self.store is not None and product_id not in self._entries:
            stored = await self.store.get(product_id)
            if stored is not None:
                kept, fetched_at = stored
                age = (datetime.now(UTC) - fetched_at).total_seconds()
                if age < self.ttl_s:
                    self._entries[product_id] = _Entry(kept, self.monotonic() - age)
                    return kept
        schema: DpSchema | None = None
        if self.api is not None:
            try:
                spec = await self.api.get_specifications(device_id, version="v1.1")
                schema = schema_from_specification(product_id, spec)
            except (TuyaError, OSError) as e:
                log.warning("DP schema of product %s unavailable: %r", product_id, e)
        if schema is not None and self.store is not None:
            await self.store.put(schema, datetime.now(UTC))
        previous = self._entries.get(product_id)
        if schema is None and previous is not None and previous.schema is not None:
            # keep typing with the old schema rather than none at all
            self._entries[product_id] = _Entry(
                previous.schema, self.monotonic() - self.ttl_s + RETRY_FAILED_SCHEMA_S
            )
            return previous.schema
        self._entries[product_id] = _Entry(schema, self.monotonic())
        return schema


class CloudDeviceSource:
    """`GET /v1.0/devices/{id}` (online, status, owner, home, name in one call), paced by a token bucket."""

    def __init__(self, api: DeviceDetailsApi, *, rate_per_s: float) -> None:
        self.api = api
        self.interval = 1.0 / rate_per_s
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def _pace(self) -> None:
        async with self._lock:
            now = time.monotonic()
            wait = self._next - now
            self._next = max(now, self._next) + self.interval
        if wait > 0:
            await asyncio.sleep(wait)

    async def fetch(self, device_id: str) -> CloudDevice | None:
        """The cloud's view, or None when the cloud could not say (the shadow is left as it is)."""
        await self._pace()
        now_ms = int(time.time() * 1000)
        try:
            details = await self.api.get_device(device_id)
        except (TuyaDeviceNotFoundError, TuyaDataNotFoundError):
            return CloudDevice(device_id, exists=False, fetched_at_ms=now_ms)
        except (TuyaError, OSError) as e:
            log.warning("reconciling %s: the OpenAPI did not answer: %r", device_id, e)
            return None
        return CloudDevice(
            device_id=device_id,
            exists=True,
            fetched_at_ms=now_ms,
            product_id=details.product_id,
            online=details.online,
            owner_uid=details.uid,
            home_id=details.owner_id,
            name=details.name,
            status=tuple((s.code, s.value) for s in details.status),
        )
