"""Reconciliation of stale shadows from the OpenAPI: the cloud's view goes through the writer's merge
rules, a device the cloud no longer has is marked removed, and a device the API could not answer for is left
alone."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from fleet_shared.tuya.errors import TuyaDeviceNotFoundError, TuyaSystemError
from fleet_status.adapters.tuya import CloudDeviceSource
from fleet_status.domain.shadow import BindingState, Shadow
from fleet_status.ports import StoredShadow
from fleet_status.service_layer.handlers import reconcile_stale
from tests.unit.status.fakes import FakeShadowStore, make

pytestmark = pytest.mark.unit


class StaleStore(FakeShadowStore):
    def __init__(self, stale: list[str]) -> None:
        super().__init__()
        self.stale_ids = stale
        self.touched: list[str] = []

    async def stale(self, before: datetime, limit: int) -> list[str]:
        return self.stale_ids[:limit]

    async def touch(self, device_ids: Sequence[str], now: datetime) -> None:
        self.touched.extend(device_ids)


class Cloud:
    """The OpenAPI's device details: d1 exists (online, temp 23.0 raw 230), d2 is gone, d3 errors."""

    async def get_device(self, device_id: str) -> Any:
        if device_id == "d2":
            raise TuyaDeviceNotFoundError(2010, "device not found")
        if device_id == "d3":
            raise TuyaSystemError(1199, "system error")
        return SimpleNamespace(
            product_id="p1",
            online=True,
            uid="owner-1",
            owner_id="home-1",
            name="Hall sensor",
            status=[SimpleNamespace(code="temp", value=230)],
        )


async def test_stale_shadows_are_refreshed_removed_or_left_alone() -> None:
    _broker, writer, _store, _publisher, _history = make()
    store = StaleStore(["d1", "d2", "d3"])
    for device_id in ("d1", "d2", "d3"):
        store.docs[device_id] = StoredShadow(Shadow(device_id, product_id="p1", version=1), [])
    writer.shadows = store

    looked_at = await reconcile_stale(
        store,
        CloudDeviceSource(Cloud(), rate_per_s=1000),
        writer,
        stale_after=timedelta(hours=1),
        limit=10,
    )
    await writer.flush_once()

    assert looked_at == 3
    d1, d2, d3 = (store.docs[d].shadow for d in ("d1", "d2", "d3"))
    assert d1.dps["temp"].value == 23.0  # typed and scaled by the product's schema
    assert d1.presence.online is True
    assert d1.name is not None
    assert d1.name.name == "Hall sensor"
    assert d2.binding.state is BindingState.REMOVED
    assert d3.version == 1  # the API failed: unchanged, and asked again next round
    assert sorted(store.touched) == ["d1", "d2"]
