"""Documents written by the earlier version (before quota blocks): a unit reserved per device and counter,
listed by name in the counter, the quota day recorded before reserving. This version goes on from them:
every device gets one result, no unit is given back twice or given back without having been taken, and the
counters end equal to the devices unbound."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from fleet_contracts.unbinding import RefusalCause, RequestUnbindBatch, UnbindMode
from fleet_unbinding.domain import authorization as authz
from fleet_unbinding.domain import quota
from fleet_unbinding.domain.batch import BatchStatus
from fleet_unbinding.domain.quota import CounterKey
from fleet_unbinding.domain.unbind import UnbindState
from fleet_unbinding.service_layer import handlers as h
from tests.unit.unbinding.fakes import T0, World, world

pytestmark = pytest.mark.unit

DAY = "2026-11-29"
KEYS = quota.counter_keys("op", "p1", DAY)


async def earlier_version_batch(w: World, states: dict[str, dict[str, Any]], listed: set[str]) -> None:
    """Batch b1 with one device per entry of `states` (fields of its document as the earlier version left
    it), and the units `listed` by name in both counters (each counted in `used`, as it did)."""
    await h.manage_authorization(
        w.ports, "p1", lambda s: authz.register(s, owner="op", original_owner=None, actor="op", at=T0)
    )
    for d in states:
        w.tuya.add(d, "p1")
    request = RequestUnbindBatch(
        batch_id="b1", operator_id="op", mode=UnbindMode.LIST, device_ids=list(states)
    )
    await h.request_batch(w.ports, request)
    for d, fields in states.items():
        u = w.unbinds.docs[f"b1/{d}"]
        w.unbinds.docs[u.id] = replace(u, product_id="p1", quota_day=DAY, **fields)
        assert w.unbinds.docs[u.id].units_listed
    for d in listed:
        for key in KEYS:
            w.counters.list_unit(key, quota.unit_id("b1", d))


async def used(w: World, key: CounterKey) -> int:
    return await w.counters.used(key)


async def test_every_earlier_state_goes_on_to_one_result_and_the_counters_equal_the_unbinds() -> None:
    w = world()
    await earlier_version_batch(
        w,
        {
            # the day was recorded, the reservation landed, the RESERVED write did not
            "pending_held": {},
            # the day was recorded, the process died before its reservation landed
            "pending_free": {},
            "reserved": {"state": UnbindState.RESERVED, "units_held": True},
            "reserved_offline": {"state": UnbindState.RESERVED, "units_held": True},
            "calling": {
                "state": UnbindState.CALLING,
                "units_held": True,
                "owner_uid": "u1",
                "active_time": 1_700_000_000,
                "calls": 1,
                "called_at": T0,
            },
            # refunded by the earlier version, which died before clearing the flag
            "refunded": {
                "state": UnbindState.REFUSED,
                "cause": RefusalCause.DEVICE_OFFLINE,
                "units_held": True,
                "finished_at": T0,
            },
            "unbound": {"state": UnbindState.UNBOUND, "units_held": True, "finished_at": T0},
        },
        listed={"pending_held", "reserved", "reserved_offline", "calling", "unbound"},
    )
    w.tuya.devices["unbound"] = replace(w.tuya.devices["unbound"], owner_uid=None)
    w.tuya.remove_script["reserved_offline"] = ["2001"]
    # the calling device's call never ran (same owner, same activation): it is called again
    w.clock.advance(seconds=60)  # past the earlier intent's lease
    w.ports.new_process()
    assert [await used(w, k) for k in KEYS] == [5, 5]

    await h.recover(w.ports)

    results = {d: (u.state, u.cause) for d, u in w.unbinds.of("b1").items()}
    assert results == {
        "pending_held": (UnbindState.UNBOUND, None),
        "pending_free": (UnbindState.UNBOUND, None),
        "reserved": (UnbindState.UNBOUND, None),
        "reserved_offline": (UnbindState.REFUSED, RefusalCause.DEVICE_OFFLINE),
        "calling": (UnbindState.UNBOUND, None),
        "refunded": (UnbindState.REFUSED, RefusalCause.DEVICE_OFFLINE),
        "unbound": (UnbindState.UNBOUND, None),
    }
    assert w.tuya.removals == {"pending_held": 1, "pending_free": 1, "reserved": 1, "calling": 1}
    # 5 unbound: the earlier units of the unbound, the one given back by the PENDING device that then
    # took a block's unit, none for a reservation that never landed or a refund already made
    assert [await used(w, k) for k in KEYS] == [5, 5]
    for key in KEYS:  # the units given back are unlisted; the unbound devices' stay listed and counted
        assert w.counters.listed[key.id] == {f"b1/{d}" for d in ("reserved", "calling", "unbound")}
    assert not any(u.units_held for u in w.unbinds.docs.values() if u.state is UnbindState.REFUSED)
    batch = await w.batches.get("b1")
    assert batch is not None
    assert batch.status is BatchStatus.FINISHED
    assert await w.counters.open_blocks() == []

    # running again (another replica, a restart) gives back nothing more
    w.ports.new_process()
    await h.recover(w.ports)
    assert [await used(w, k) for k in KEYS] == [5, 5]


async def test_a_cancelled_earlier_pending_device_gives_back_only_what_it_held() -> None:
    w = world()
    await earlier_version_batch(w, {"held": {}, "free": {}}, listed={"held"})
    assert [await used(w, k) for k in KEYS] == [1, 1]
    await h.cancel_batch(w.ports, "b1", "op")
    assert {u.cause for u in w.unbinds.of("b1").values()} == {RefusalCause.CANCELLED}
    assert [await used(w, k) for k in KEYS] == [0, 0]
    await h.recover(w.ports)
    assert [await used(w, k) for k in KEYS] == [0, 0]
    assert w.tuya.removals == {}
