"""The handlers against in-memory ports: every device gets exactly one result, quotas hold, crashes and
lost answers never unbind a device twice, cancel, approval, idempotency, QR scans."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta

import orjson
import pytest
from pydantic import SecretStr

from fleet_contracts import topics
from fleet_contracts.unbinding import RefusalCause, RequestUnbindBatch, UnbindBatchFinished, UnbindMode
from fleet_unbinding.domain import authorization as authz
from fleet_unbinding.domain import unbind as machine
from fleet_unbinding.domain.authorization import GrantKind
from fleet_unbinding.domain.batch import BatchError, BatchStatus
from fleet_unbinding.domain.batch import create as create_batch
from fleet_unbinding.domain.quota import CounterKey, QuotaScope
from fleet_unbinding.domain.unbind import UnbindState
from fleet_unbinding.ports import OutboxEntry, TuyaRefused
from fleet_unbinding.service_layer import handlers as h
from tests.unit.unbinding.fakes import T0, FakeUnbindStore, World, world

pytestmark = pytest.mark.unit

DAY = "2026-11-29"


async def register(w: World, pid: str, owner: str = "op") -> None:
    await h.manage_authorization(
        w.ports, pid, lambda s: authz.register(s, owner=owner, original_owner=None, actor=owner, at=T0)
    )


def list_request(devices: list[str], batch_id: str = "b1", operator: str = "op") -> RequestUnbindBatch:
    return RequestUnbindBatch(
        batch_id=batch_id, operator_id=operator, mode=UnbindMode.LIST, device_ids=devices
    )


async def status_of(w: World, batch_id: str) -> BatchStatus | None:
    batch = await w.batches.get(batch_id)
    return None if batch is None else batch.status


async def used(w: World, scope: QuotaScope, subject: str) -> int:
    return await w.counters.used(CounterKey(scope, subject, DAY))


async def test_a_list_batch_gives_every_device_one_result_and_finishes_with_events() -> None:
    w = world()
    await register(w, "p1")
    w.tuya.add("ok", "p1")
    w.tuya.add("other", "p2")
    w.tuya.add("free", "p1", owner=None)
    w.tuya.add("offline", "p1")
    w.tuya.remove_script["offline"] = ["2001"]
    await h.request_batch(w.ports, list_request(["ok", "other", "free", "offline", "ghost"]))
    batch = await h.run_batch(w.ports, "b1")

    assert batch is not None
    assert batch.status is BatchStatus.FINISHED
    results = {d: (u.state, u.cause, u.tuya_error_code) for d, u in w.unbinds.of("b1").items()}
    assert results == {
        "ok": (UnbindState.UNBOUND, None, None),
        "other": (UnbindState.REFUSED, RefusalCause.UNAUTHORIZED, None),
        "free": (UnbindState.REFUSED, RefusalCause.NOT_BOUND, None),
        "offline": (UnbindState.REFUSED, RefusalCause.DEVICE_OFFLINE, None),
        "ghost": (UnbindState.REFUSED, RefusalCause.TUYA_ERROR, "2010"),
    }
    assert w.tuya.removals == {"ok": 1}
    # only the unbound device keeps its units; the offline one was refunded
    assert await used(w, QuotaScope.ACCOUNT, "op") == 1
    assert await used(w, QuotaScope.PRODUCT, "p1") == 1
    assert not any(u.units_held for u in w.unbinds.docs.values() if u.state is UnbindState.REFUSED)
    # one result event per device, the batch's requested and finished events, all decodable
    device_events = [e for entries in w.unbinds.outbox.values() for e in entries]
    assert len(device_events) == 5
    batch_events = [topics.UNBINDING_EVENTS.decode(e.body) for e in w.batches.outbox["b1"]]
    assert [e.type for e in batch_events] == ["unbinding.batch.requested.v1", "unbinding.batch.finished.v1"]
    finished = batch_events[1].data
    assert isinstance(finished, UnbindBatchFinished)
    assert (finished.devices_total, finished.unbound, finished.refused) == (5, 1, 4)


async def test_quota_is_never_exceeded_and_refused_devices_name_the_quota() -> None:
    w = world()
    await register(w, "p1")
    await h.set_limit(w.ports, QuotaScope.PRODUCT, "p1", limit=3, reason="TICKET-1", actor="admin")
    devices = [f"d{i}" for i in range(5)]
    for d in devices:
        w.tuya.add(d, "p1")
    await h.request_batch(w.ports, list_request(devices))
    await h.run_batch(w.ports, "b1")
    states = [u.state for u in w.unbinds.of("b1").values()]
    assert states.count(UnbindState.UNBOUND) == 3
    refused = [u for u in w.unbinds.of("b1").values() if u.state is UnbindState.REFUSED]
    assert {u.cause for u in refused} == {RefusalCause.QUOTA_EXCEEDED}
    assert await used(w, QuotaScope.PRODUCT, "p1") == 3
    assert await used(w, QuotaScope.ACCOUNT, "op") == 3  # compensated: the refused ones hold nothing
    usage = await h.usage(w.ports, QuotaScope.PRODUCT, "p1")
    assert (usage.limit, usage.used, usage.remaining) == (3, 3, 0)


async def test_concurrent_batches_over_shared_counters_stay_exact() -> None:
    w = world()
    await register(w, "p1")
    for b in range(8):
        for i in range(30):
            w.tuya.add(f"b{b}d{i}", "p1")
    for b in range(8):
        await h.request_batch(w.ports, list_request([f"b{b}d{i}" for i in range(30)], batch_id=f"b{b}"))
    await asyncio.gather(*(h.run_batch(w.ports, f"b{b}") for b in range(8)))
    unbound = sum(u.state is UnbindState.UNBOUND for u in w.unbinds.docs.values())
    assert unbound == 100
    assert await used(w, QuotaScope.PRODUCT, "p1") == 100
    assert sum(w.tuya.removals.values()) == 100


async def test_a_lost_answer_is_reconciled_and_the_device_is_not_unbound_twice() -> None:
    w = world()
    await register(w, "p1")
    w.tuya.add("d1", "p1")
    w.tuya.remove_script["d1"] = ["lost"]  # Tuya unbound it, the answer never came
    await h.request_batch(w.ports, list_request(["d1"]))
    await h.run_batch(w.ports, "b1")
    u = w.unbinds.of("b1")["d1"]
    assert (u.state, u.reconciled) == (UnbindState.UNBOUND, True)
    assert w.tuya.removals == {"d1": 1}


async def test_a_rate_limited_call_is_retried_after_reconciliation_and_gives_up_after_max_calls() -> None:
    """A call refused for the rate limit (1199) did not run: it does not use up the device's calls (up to
    `RATE_LIMITED_PATIENCE` times them); a busy answer (1111) may have run: `max_calls` bounds it."""
    w = world(max_calls=3)
    await register(w, "p1")
    for d in ("d1", "d2", "busy", "limited"):
        w.tuya.add(d, "p1")
    w.tuya.remove_script["d1"] = ["1199"]
    w.tuya.remove_script["d2"] = ["1199", "1199", "1199"]
    w.tuya.remove_script["busy"] = ["1111", "1111", "1111"]
    w.tuya.remove_script["limited"] = ["1199"] * 15
    await h.request_batch(w.ports, list_request(["d1", "d2", "busy", "limited"]))
    await h.run_batch(w.ports, "b1")
    got = {d: (u.state, u.cause, u.tuya_error_code, u.calls) for d, u in w.unbinds.of("b1").items()}
    assert got == {
        "d1": (UnbindState.UNBOUND, None, None, 2),
        "d2": (UnbindState.UNBOUND, None, None, 4),
        "busy": (UnbindState.REFUSED, RefusalCause.TUYA_ERROR, "1111", 3),
        "limited": (UnbindState.REFUSED, RefusalCause.TUYA_ERROR, "1199", 3 * machine.RATE_LIMITED_PATIENCE),
    }
    assert w.tuya.removals == {"d1": 1, "d2": 1}
    assert await used(w, QuotaScope.PRODUCT, "p1") == 2


async def test_recovery_after_a_crash_between_intent_and_answer_never_calls_twice() -> None:
    w = world()
    await register(w, "p1")
    w.tuya.add("d1", "p1")
    w.tuya.add("d2", "p1")
    await h.request_batch(w.ports, list_request(["d1", "d2"]))
    # run until both intents are durable, then "crash": d1's removal ran, d2's never did
    for d in ("d1", "d2"):
        intent = await h._check_and_start(w.ports, w.unbinds.of("b1")[d])  # stepping the machine by hand
        assert intent is not None
        assert intent.state is UnbindState.CALLING
    await w.tuya.remove("d1", reset=False)
    w.ports.new_process()

    # a worker that did not record the intents leaves them alone while a call may still be in flight
    await h.recover(w.ports)
    assert {u.state for u in w.unbinds.of("b1").values()} == {UnbindState.CALLING}
    w.clock.advance(seconds=30)
    assert await h.recover(w.ports) == 1
    assert {d: u.state for d, u in w.unbinds.of("b1").items()} == {
        "d1": UnbindState.UNBOUND,
        "d2": UnbindState.UNBOUND,
    }
    assert w.tuya.removals == {"d1": 1, "d2": 1}
    assert w.unbinds.of("b1")["d1"].reconciled
    assert await status_of(w, "b1") is BatchStatus.FINISHED


async def test_recovery_refunds_a_refusal_whose_refund_was_not_recorded() -> None:
    w = world()
    await register(w, "p1")
    w.tuya.add("d1", "p1")
    w.tuya.remove_script["d1"] = ["2001"]
    await h.request_batch(w.ports, list_request(["d1"]))
    u = await h._check_and_start(w.ports, w.unbinds.of("b1")["d1"])
    assert u is not None
    await w.ports.quota.close_idle(everything=True)
    assert await used(w, QuotaScope.PRODUCT, "p1") == 1
    step = machine.refuse(u, RefusalCause.DEVICE_OFFLINE, T0)
    saved = await h._save(w.ports, u, step)  # refusal written, then a crash before the refund
    assert saved is not None
    assert saved.units_held
    await h.recover(w.ports)
    assert await used(w, QuotaScope.PRODUCT, "p1") == 0
    assert not w.unbinds.of("b1")["d1"].units_held


async def test_cancel_refuses_the_devices_not_yet_done() -> None:
    w = world()
    await register(w, "p1")
    for d in ("d1", "d2"):
        w.tuya.add(d, "p1")
    await h.request_batch(w.ports, list_request(["d1", "d2"]))
    batch = await h.cancel_batch(w.ports, "b1", "op")
    assert batch.cancel_requested
    assert {u.cause for u in w.unbinds.of("b1").values()} == {RefusalCause.CANCELLED}
    assert await status_of(w, "b1") is BatchStatus.FINISHED
    assert w.tuya.removals == {}


async def test_a_big_batch_waits_for_approval_by_another_administrator() -> None:
    w = world(approval_threshold=1)
    await register(w, "p1")
    for d in ("d1", "d2"):
        w.tuya.add(d, "p1")
    batch, _ = await h.request_batch(w.ports, list_request(["d1", "d2"]))
    assert batch.status is BatchStatus.AWAITING_APPROVAL
    await h.run_batch(w.ports, "b1")
    assert w.tuya.removals == {}
    with pytest.raises(BatchError):
        await h.approve_batch(w.ports, "b1", "op")
    await h.approve_batch(w.ports, "b1", "admin2")
    await h.run_batch(w.ports, "b1")
    assert w.tuya.removals == {"d1": 1, "d2": 1}


async def test_an_idempotency_key_returns_the_same_batch_and_refuses_a_different_request() -> None:
    w = world()
    first, created = await h.request_batch(w.ports, list_request(["d1"]), idempotency_key="k1")
    again, created_again = await h.request_batch(
        w.ports, list_request(["d1"], batch_id="x"), idempotency_key="k1"
    )
    assert (created, created_again) == (True, False)
    assert first.batch_id == again.batch_id
    with pytest.raises(BatchError, match="different request"):
        await h.request_batch(w.ports, list_request(["d2"]), idempotency_key="k1")
    assert len(w.batches.docs) == 1


async def test_a_revoked_partner_is_refused_for_every_device() -> None:
    w = world()
    await register(w, "p1", owner="dev")
    await h.manage_authorization(
        w.ports, "p1", lambda s: authz.grant(s, account="op", kind=GrantKind.PARTNER, actor="dev", at=T0)
    )
    await h.manage_authorization(
        w.ports, "p1", lambda s: authz.revoke(s, account="op", kind=GrantKind.PARTNER, actor="dev", at=T0)
    )
    for d in ("d1", "d2"):
        w.tuya.add(d, "p1")
    await h.request_batch(w.ports, list_request(["d1", "d2"]))
    await h.run_batch(w.ports, "b1")
    assert {u.cause for u in w.unbinds.of("b1").values()} == {RefusalCause.UNAUTHORIZED}
    assert len(w.authorizations.rows) == 3  # register, grant, revoke: all kept


async def test_a_qr_batch_unbinds_already_bound_scanners_and_refuses_the_31st_and_late_ones() -> None:
    w = world()
    await register(w, "p1")
    for i in range(32):
        w.tuya.add(f"cam{i}", "p1")
    req = RequestUnbindBatch(batch_id="q1", operator_id="op", mode=UnbindMode.QR, product_id="p1")
    batch, payload = await h.open_qr_batch(
        w.ports,
        w.tuya,
        req,
        uid="app-uid",
        home_id=None,
        ssid="shop",
        password=SecretStr("wifi-pass"),
        validity=timedelta(minutes=5),
    )
    assert payload is not None
    assert orjson.loads(payload.get_secret_value()) == {"s": "shop", "p": "wifi-pass", "t": "EUtok1sec"}
    assert "wifi-pass" not in repr(w.batches.docs["q1"])
    scans: list[tuple[str, str | None]] = [(f"cam{i}", "113") for i in range(31)]
    w.tuya.failed_pairings = [*scans, ("cam-other", "2001")]
    assert await h.poll_qr(w.ports, w.tuya, "q1") == 31
    before = dict(w.unbinds.docs)
    assert await h.poll_qr(w.ports, w.tuya, "q1") == 0  # the same failures again: all done already
    assert w.unbinds.docs == before
    assert sum(w.tuya.removals.values()) == 30
    w.clock.advance(minutes=5)
    late = await h.qr_scan(w.ports, "q1", "cam31", "113")
    assert late is not None
    assert late.cause is RefusalCause.QR_EXPIRED
    await h.try_finish(w.ports, "q1")
    results = w.unbinds.of("q1")
    assert sum(u.state is UnbindState.UNBOUND for u in results.values()) == 30
    assert results["cam30"].cause is RefusalCause.QR_FULL
    assert "cam-other" not in results
    assert await status_of(w, "q1") is BatchStatus.FINISHED
    assert batch.qr is not None


async def test_dry_run_touches_no_counter() -> None:
    w = world()
    await register(w, "p1")
    w.tuya.add("d1", "p1")
    w.tuya.add("d2", "p9")
    out = await h.dry_run(w.ports, "op", ["d1", "d2"])
    assert [(p.device_id, p.would_unbind) for p in out] == [("d1", True), ("d2", False)]
    assert w.counters.counts == {}


async def test_a_cancel_that_refunds_before_a_racing_reservation_lands_leaks_no_unit() -> None:
    w = world()
    await register(w, "p1")
    w.tuya.add("d1", "p1")
    await h.request_batch(w.ports, list_request(["d1"]))

    async def cancel_first() -> None:
        # the cancel lands while the runner reserves its quota block: its intent write then loses
        w.counters.before_reserve = None
        await h.cancel_batch(w.ports, "b1", "op")

    w.counters.before_reserve = cancel_first
    await h.run_batch(w.ports, "b1")
    u = w.unbinds.of("b1")["d1"]
    assert (u.state, u.cause, u.units_held) == (UnbindState.REFUSED, RefusalCause.CANCELLED, False)
    assert await used(w, QuotaScope.ACCOUNT, "op") == 0
    assert await used(w, QuotaScope.PRODUCT, "p1") == 0
    assert w.tuya.removals == {}


async def test_a_crash_between_the_batch_and_its_devices_is_completed_by_the_next_run() -> None:
    w = world()
    await register(w, "p1")
    w.tuya.add("d1", "p1")
    batch, events = create_batch(list_request(["d1"]), T0, approval_threshold=100)
    assert await w.batches.add(batch, w.ports.events.outbox(events, T0))  # then the process died
    assert await h.try_finish(w.ports, "b1") == batch  # no devices yet: it cannot finish empty
    await h.recover(w.ports)
    assert w.unbinds.of("b1")["d1"].state is UnbindState.UNBOUND
    assert await status_of(w, "b1") is BatchStatus.FINISHED


async def test_quota_blocks_cost_two_counter_writes_each_and_give_back_what_no_device_took() -> None:
    w = world()
    w.ports.quota_block_size = 4
    w.ports.new_process()
    await register(w, "p1")
    devices = [f"d{i}" for i in range(10)]
    for d in devices:
        w.tuya.add(d, "p1")
    w.tuya.remove_script["d3"] = ["2001"]  # offline after its unit was taken: refunded once
    await h.request_batch(w.ports, list_request(devices))
    await h.run_batch(w.ports, "b1")
    assert sum(u.state is UnbindState.UNBOUND for u in w.unbinds.of("b1").values()) == 9
    assert await used(w, QuotaScope.ACCOUNT, "op") == 9
    assert await used(w, QuotaScope.PRODUCT, "p1") == 9
    assert await w.counters.open_blocks() == []
    # 10 units in blocks of 4: three blocks per counter, each reserved and settled, plus one refund each
    assert w.counters.writes == 2 * (3 * 2 + 1)


async def test_a_block_left_by_a_dead_process_is_settled_by_count_after_its_until() -> None:
    w = world()
    await register(w, "p1")
    for d in ("d1", "d2"):
        w.tuya.add(d, "p1")
    await h.request_batch(w.ports, list_request(["d1", "d2"]))
    started = await h._check_and_start(w.ports, w.unbinds.of("b1")["d1"])  # one unit taken, then a crash
    assert started is not None
    assert await used(w, QuotaScope.PRODUCT, "p1") == 32  # the whole block is reserved
    w.ports.new_process()
    assert await h.settle_abandoned_blocks(w.ports) == 0  # its process may still hand units out
    w.clock.advance(seconds=36)
    assert await h.settle_abandoned_blocks(w.ports) == 2  # one block per counter
    assert await used(w, QuotaScope.PRODUCT, "p1") == 1  # d1 names its block
    assert await used(w, QuotaScope.ACCOUNT, "op") == 1
    assert await h.settle_abandoned_blocks(w.ports) == 0
    await h.recover(w.ports)
    assert await used(w, QuotaScope.PRODUCT, "p1") == 2
    assert w.tuya.removals == {"d1": 1, "d2": 1}


async def test_a_taker_waits_for_units_in_flight_before_refusing_the_quota() -> None:
    w = world()
    await register(w, "p1")
    await register(w, "p2")
    await h.set_limit(w.ports, QuotaScope.ACCOUNT, "op", limit=2, reason="T-1", actor="admin")
    await h.set_limit(w.ports, QuotaScope.PRODUCT, "p1", limit=0, reason="T-2", actor="admin")
    # d1 (p1) takes an account unit, then finds its product full and gives it back: d2 and d3 (p2) must
    # not be refused for the account meanwhile
    w.tuya.add("d1", "p1")
    w.tuya.add("d2", "p2")
    w.tuya.add("d3", "p2")
    await h.request_batch(w.ports, list_request(["d1", "d2", "d3"]))
    await h.run_batch(w.ports, "b1")
    got = {d: (u.state, u.cause) for d, u in w.unbinds.of("b1").items()}
    assert got == {
        "d1": (UnbindState.REFUSED, RefusalCause.QUOTA_EXCEEDED),
        "d2": (UnbindState.UNBOUND, None),
        "d3": (UnbindState.UNBOUND, None),
    }
    assert await used(w, QuotaScope.ACCOUNT, "op") == 2


class Died(BaseException):
    """The process died (no handler may swallow it)."""


class DiesAfterIntent(FakeUnbindStore):
    """The process dies right after a device's intent (its units' blocks named) is durable."""

    dying = True

    async def save(self, unbind: machine.DeviceUnbind, outbox: Sequence[OutboxEntry]) -> bool:
        landed = await super().save(unbind, outbox)
        if self.dying and unbind.state is UnbindState.CALLING:
            raise Died
        return landed


async def test_a_dead_processs_block_holds_its_unused_units_until_settled_by_count() -> None:
    """What an operator sees between a process's death and the settlement of its blocks: `used` exact at
    once, the unused units `held` until the block's `until` (hand-out window + call lease), refusals
    meanwhile when the rest of the limit is held; then any worker settles the block by count."""
    w = world()
    w.unbinds = w.ports.unbinds = store = DiesAfterIntent()
    await register(w, "p1")
    await h.set_limit(w.ports, QuotaScope.ACCOUNT, "op", limit=10, reason="T-1", actor="admin")
    for d in ("d1", "d2"):
        w.tuya.add(d, "p1")
    await h.request_batch(w.ports, list_request(["d1"]))
    with pytest.raises(Died):
        await h.run_batch(w.ports, "b1")
    store.dying = False
    w.ports.new_process()  # nobody settles the dead process's blocks (of 10 units: the account limit)

    usage = await h.usage(w.ports, QuotaScope.ACCOUNT, "op")
    assert (usage.used, usage.held, usage.remaining) == (1, 9, 0)
    assert usage.held_until == T0 + timedelta(seconds=35)
    await h.request_batch(w.ports, list_request(["d2"], batch_id="b2"))
    await h.run_batch(w.ports, "b2")  # the account's other 9 units are still held: refused
    assert w.unbinds.of("b2")["d2"].cause is RefusalCause.QUOTA_EXCEEDED

    w.clock.advance(seconds=36)
    assert await h.settle_abandoned_blocks(w.ports) == 2  # the dead process's account and product blocks
    usage = await h.usage(w.ports, QuotaScope.ACCOUNT, "op")
    assert (usage.used, usage.held, usage.remaining, usage.held_until) == (1, 0, 9, None)
    await h.recover(w.ports)  # d1's intent, past its lease: Tuya still shows it bound, so it is called
    assert w.unbinds.of("b1")["d1"].state is UnbindState.UNBOUND
    assert w.tuya.removals == {"d1": 1}
    assert await used(w, QuotaScope.ACCOUNT, "op") == 1


async def test_quota_days_at_midnight_a_new_day_counts_from_zero_and_a_late_refund_goes_to_its_day() -> None:
    """Units are taken from the counters of the day the device's intent was recorded: a batch after
    midnight starts from zero, and a unit refunded after midnight goes back to the day it was taken."""
    w = world()
    await register(w, "p1")
    await h.set_limit(w.ports, QuotaScope.ACCOUNT, "op", limit=3, reason="T-1", actor="admin")
    w.clock.now = T0.replace(hour=23, minute=59, second=59)
    for d in ("a", "b", "late", "c", "d", "e", "f"):
        w.tuya.add(d, "p1")
    real_remove = w.tuya.remove

    async def answers_after_midnight(device_id: str, *, reset: bool) -> None:
        if device_id == "late":
            w.clock.advance(seconds=2)  # Tuya answers (offline) on the next day
            raise TuyaRefused("2001")
        await real_remove(device_id, reset=reset)

    w.tuya.remove = answers_after_midnight  # type: ignore[method-assign]
    await h.request_batch(w.ports, list_request(["a", "b", "late"]))
    await h.run_batch(w.ports, "b1")
    assert w.unbinds.of("b1")["late"].cause is RefusalCause.DEVICE_OFFLINE
    assert w.clock() >= T0.replace(day=30, hour=0, minute=0, second=0)
    nov29, nov30 = (CounterKey(QuotaScope.ACCOUNT, "op", day) for day in ("2026-11-29", "2026-11-30"))
    assert (await w.counters.used(nov29), await w.counters.used(nov30)) == (2, 0)

    await h.request_batch(w.ports, list_request(["c", "d", "e", "f"], batch_id="b2"))
    await h.run_batch(w.ports, "b2")
    results = {d: (u.state, u.cause) for d, u in w.unbinds.of("b2").items()}
    assert sorted(results.values(), key=str) == sorted(
        [(UnbindState.UNBOUND, None)] * 3 + [(UnbindState.REFUSED, RefusalCause.QUOTA_EXCEEDED)], key=str
    )
    assert (await w.counters.used(nov29), await w.counters.used(nov30)) == (2, 3)
    today = await h.usage(w.ports, QuotaScope.ACCOUNT, "op")
    assert (today.day, today.used, today.remaining) == ("2026-11-30", 3, 0)
    assert (await h.usage(w.ports, QuotaScope.ACCOUNT, "op", day="2026-11-29")).used == 2
