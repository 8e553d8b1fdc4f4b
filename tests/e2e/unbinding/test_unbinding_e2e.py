"""unbinding end to end: the simulator (strongly bound fleet, removal desk) and the service as processes on
the real Pulsar and MongoDB-wire server; every check against the simulator's ground truth (removals per
device) and the service's counters. FLEET_E2E_SCALE scales the device counts."""

from __future__ import annotations

import asyncio
import base64
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.e2e.ingest.sim_support import SimProcess
from tests.e2e.unbinding.support import ACCOUNTS, SCALE, WIFI_PASSWORD, Rig, service_env, wait_finished
from tests.support import ServiceProcess, Stack, restartable_database

pytestmark = pytest.mark.e2e

PLUG, CAMERA = "sim0plug0cz00001", "sim0ipc00sp00004"
SIM_SETTINGS: dict[str, str | int | float] = {"devices": 1, "rate_limit_rps": 0, "pairing_ez_max_devices": 30}


async def make_rig(stack: Stack, unique: str, tmp_path: Path, **settings: str | int | float) -> Rig:
    access_id = f"unb{unique}"
    secret = secrets.token_hex(16)
    sim = SimProcess(stack, access_id, secret, tmp_path / "sim.log", **SIM_SETTINGS)
    sim.start()
    await sim.wait_ready()
    keys = {name: f"fk_{name}_{secrets.token_hex(12)}" for name in ACCOUNTS}
    database = f"unbinding_e2e_{unique}"
    env = service_env(
        stack,
        access_id,
        secret,
        sim.url,
        database,
        keys,
        resume_interval_s=1,
        outbox_relay_interval_s=0.5,
        qr_poll_interval_s=0.5,
        call_lease_s=3,
        **{"approval_threshold": 30, **settings},
    )
    svc = ServiceProcess("unbinding", log=tmp_path / "unbinding.log", stack=stack, env=env)
    svc.env["FLEET_LOG_LEVEL"] = "INFO"
    rig = Rig(stack, database, secret, sim, svc, keys, tmp_path)
    svc.start()
    await svc.wait_ready()
    return rig


@pytest.fixture
async def rig(stack: Stack, unique: str, tmp_path: Path) -> AsyncIterator[Rig]:
    r = await make_rig(stack, unique, tmp_path)
    try:
        yield r
    finally:
        await r.close()


async def strong_fleet(rig: Rig, devices: int, seed: int = 5) -> dict[str, Any]:
    """A fleet of strongly bound plugs and cameras (alternating, in creation order)."""
    return await rig.sim_json(  # type: ignore[no-any-return]
        "POST",
        "/sim/fleet",
        {
            "seed": seed,
            "devices": devices,
            "homes": 10,
            "product_ids": [PLUG, CAMERA],
            "binding_mode": "strong",
        },
    )


async def register(rig: Rig, product: str, owner: str, original_owner: str | None = None) -> None:
    r = await rig.call(
        "admin1",
        "POST",
        f"/v1/products/{product}/authorizations/register",
        json={"owner": owner, "original_owner": original_owner},
    )
    assert r.status_code == 201, r.text


async def set_limit(rig: Rig, scope: str, subject: str, limit: int) -> None:
    r = await rig.call(
        "admin1", "PUT", f"/v1/quotas/{scope}/{subject}", json={"limit": limit, "reason": "TICKET-1"}
    )
    assert r.status_code == 200, r.text


async def submit(rig: Rig, account: str, device_ids: list[str], **extra: Any) -> dict[str, Any]:
    r = await rig.call(account, "POST", "/v1/batches", json={"device_ids": device_ids, **extra})
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


async def wait_removals(rig: Rig, at_least: int, within_s: float = 120) -> None:
    """Until the simulator has removed at least this many devices (a batch is under way)."""
    for _ in range(int(within_s / 0.2)):
        if (await rig.sim_json("GET", "/sim/unbinding/removals"))["total"] >= at_least:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"fewer than {at_least} removals after {within_s}s")


async def results(rig: Rig, batch_id: str) -> list[dict[str, Any]]:
    r = await rig.call("brand", "GET", f"/v1/batches/{batch_id}/results")
    r.raise_for_status()
    return r.json()  # type: ignore[no-any-return]


async def test_eight_concurrent_batches_never_pass_a_quota_and_unauthorized_accounts_are_refused(
    rig: Rig,
) -> None:
    per_batch = 6 * SCALE
    fleet = await strong_fleet(rig, 16 * per_batch + 10)
    ids = fleet["bound_device_ids"]
    await register(rig, PLUG, "brand")
    await register(rig, CAMERA, "brand", original_owner="odm")
    r = await rig.call(
        "brand",
        "POST",
        f"/v1/products/{PLUG}/authorizations/grants",
        json={"account": "acme", "kind": "partner"},
    )
    assert r.status_code == 201, r.text
    product_limit, account_limit = 15 * SCALE, 25 * SCALE
    await set_limit(rig, "product", PLUG, product_limit)
    await set_limit(rig, "account", "brand", account_limit)

    # 8 batches of distinct devices, plugs and cameras in each, all at once
    chunks = [ids[i * per_batch : (i + 1) * per_batch] for i in range(8)]
    created = await asyncio.gather(*(submit(rig, "brand", c, reason="returns") for c in chunks))
    # an account nobody authorized, and a partner authorized for plugs only, asking for cameras
    rest = ids[8 * per_batch :]
    cameras = [d for i, d in enumerate(ids) if i % 2 == 1 and d in rest][:4]
    mallory = await submit(rig, "mallory", rest[:6])
    acme = await submit(rig, "acme", cameras)
    batch_ids = [b["batch_id"] for b in created]
    done = await wait_finished(rig, [*batch_ids, mallory["batch_id"], acme["batch_id"]], within=120)

    all_results = [x for b in batch_ids for x in await results(rig, b)]
    assert sorted(x["device_id"] for x in all_results) == sorted(d for c in chunks for d in c)  # one each
    unbound = [x for x in all_results if x["result"] == "unbound"]
    refused = [x for x in all_results if x["result"] == "refused"]
    assert {x["cause"] for x in refused} <= {"quota_exceeded"}, refused[:5]
    truth = await rig.sim_json("GET", "/sim/unbinding/removals")
    assert truth["removed_twice"] == []
    assert truth["total"] == len(unbound) == account_limit  # enough devices: the account quota binds exactly
    assert set(truth["removals"]) == {x["device_id"] for x in unbound}
    plugs_unbound = sum(1 for x in unbound if x["product_id"] == PLUG)
    assert await rig.counter("account", "brand") == len(unbound)
    assert await rig.counter("product", PLUG) == plugs_unbound <= product_limit
    assert await rig.counter("product", CAMERA) == len(unbound) - plugs_unbound
    for b in done[-2:]:
        assert b["refused_by_cause"] == {"unauthorized": b["total"]}, b
    assert await rig.counter("account", "mallory") == 0
    assert await rig.counter("account", "acme") == 0


async def test_malformed_bodies_get_422_naming_the_field_and_change_nothing(rig: Rig) -> None:
    fleet = await strong_fleet(rig, 20)
    ids = fleet["bound_device_ids"]
    await register(rig, PLUG, "brand")
    cases = [
        ({"device_ids": [ids[0], ids[1], ids[0]]}, "device_ids"),
        ({"device_ids": [f"dev{i:05d}" for i in range(1001)]}, "device_ids"),
        ({"device_ids": ids[:2], "mode": "bluetooth"}, "mode"),
        ({"device_ids": ids[:2], "surprise": 1}, "surprise"),
        ({"mode": "wired", "device_ids": ids[:2]}, "gateway_id"),
    ]
    for body, field in cases:
        r = await rig.call("brand", "POST", "/v1/batches", json=body)
        assert r.status_code == 422, (body, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        assert field in r.json()["detail"] or field in orjson.dumps(r.json().get("errors", [])).decode(), (
            r.text
        )
    r = await rig.call(
        "brand", "POST", "/v1/batches/csv", content=b"device_id\n\n", headers={"content-type": "text/csv"}
    )
    assert r.status_code == 422, r.text
    listed = await rig.call("admin1", "GET", "/v1/batches")
    assert listed.json() == []
    assert (await rig.sim_json("GET", "/sim/unbinding/removals"))["total"] == 0
    assert await rig.counter("account", "brand") == 0


async def interrupted_batch(
    stack: Stack, unique: str, tmp_path: Path, interrupt: Callable[[Rig], Awaitable[None]]
) -> None:
    """A batch of 24 x SCALE devices, with Tuya faults, interrupted once a quarter is removed; afterwards
    every device has one result, none was removed twice, and the counter equals the removals."""
    rig = await make_rig(stack, unique, tmp_path, tuya_removal_rate_per_s=4)
    try:
        n = 24 * SCALE
        ids = (await strong_fleet(rig, n))["bound_device_ids"]
        await register(rig, PLUG, "brand")
        await register(rig, CAMERA, "brand")
        # rate-limited and offline answers on the way: retried (1199/1110) or refused (2001), never doubled
        await rig.sim_json(
            "PUT",
            "/sim/unbinding/removals/config",
            {"rate_limited_ratio": 0.1, "offline_ratio": 0.05, "seed": 3},
        )
        batch = await submit(rig, "brand", ids, reason="returns")
        await wait_removals(rig, n // 4)
        await interrupt(rig)
        [done] = await wait_finished(rig, [batch["batch_id"]], within=300)
        assert done["total"] == n
        got = await results(rig, batch["batch_id"])
        assert sorted(x["device_id"] for x in got) == sorted(ids)
        unbound = {x["device_id"] for x in got if x["result"] == "unbound"}
        causes = {x["cause"] for x in got if x["result"] == "refused"}
        assert causes <= {"device_offline", "tuya_error"}, causes
        truth = await rig.sim_json("GET", "/sim/unbinding/removals")
        assert truth["removed_twice"] == []
        assert set(truth["removals"]) == unbound
        assert await rig.counter("account", "brand") == len(unbound)
    finally:
        await rig.close()


async def test_sigkill_mid_batch_resumes_without_unbinding_any_device_twice(
    stack: Stack, unique: str, tmp_path: Path
) -> None:
    async def sigkill(rig: Rig) -> None:
        rig.sigkill_service()
        rig.restart_service()
        await rig.svc.wait_ready()

    await interrupted_batch(stack, unique, tmp_path, sigkill)


async def test_qr_session_unbinds_scanning_devices_and_keeps_no_secret(rig: Rig) -> None:
    fleet = await strong_fleet(rig, 12)
    homes = fleet["homes"]
    operator_uid = homes[0]["owner_uid"]
    truths = [await rig.sim_json("GET", f"/sim/truth/devices/{d}") for d in fleet["bound_device_ids"]]
    others = [t for t in truths if t.get("uid", t.get("owner_uid")) != operator_uid]
    scanners = [t["device_id"] for t in others[:3]]
    await register(rig, PLUG, "brand")
    await register(rig, CAMERA, "brand")
    r = await rig.call(
        "brand",
        "POST",
        "/v1/batches",
        json={
            "mode": "qr",
            "uid": operator_uid,
            "ssid": "after-sales",
            "password": WIFI_PASSWORD,
            "validity_s": 8,
        },
    )
    assert r.status_code == 201, r.text
    batch = r.json()
    payload = orjson.loads(batch["qr_payload"])
    assert payload["p"] == WIFI_PASSWORD
    # the image of the same payload, as pairing answers it (shared renderer), in this answer only
    assert batch["qr"]["payload"] == batch["qr_payload"]
    assert batch["qr"]["svg"].startswith("<svg")
    assert base64.b64decode(batch["qr"]["png_base64"]).startswith(b"\x89PNG")
    again = (await rig.call("brand", "GET", f"/v1/batches/{batch['batch_id']}")).json()
    assert "qr" not in again
    assert "qr_payload" not in again
    outcomes = await rig.sim_json(
        "POST", "/sim/pairing/activate", {"device_ids": scanners, "token": payload["t"]}
    )
    assert all(not o["ok"] for o in outcomes), outcomes  # still bound: pairing refused
    [done] = await wait_finished(rig, [batch["batch_id"]], within=60)
    assert done["by_state"] == {"unbound": 3}, done
    truth = await rig.sim_json("GET", "/sim/unbinding/removals")
    assert sorted(truth["removals"]) == sorted(scanners)
    for d in scanners:
        assert (await rig.sim_json("GET", f"/sim/truth/devices/{d}")).get("uid") in (None, "")

    # no document and no log line holds the Wi-Fi password, the access secret or the assembled token
    await asyncio.sleep(1)
    stored = orjson.dumps(await rig.documents(), default=str).decode()
    logs = (rig.tmp / "unbinding.log").read_text()
    for secret in (WIFI_PASSWORD, rig.access_secret, payload["t"]):
        assert secret not in stored
        assert secret not in logs
    assert re.search(r'"level"', logs) or logs == ""


async def test_approval_cancel_wired_mode_dry_run_and_records(
    stack: Stack, unique: str, tmp_path: Path
) -> None:
    rig = await make_rig(stack, unique, tmp_path, tuya_removal_rate_per_s=1)
    try:
        fleet = await strong_fleet(rig, 60)
        ids = fleet["bound_device_ids"]
        await register(rig, PLUG, "brand")
        await register(rig, CAMERA, "brand")
        await set_limit(rig, "product", PLUG, 1000)
        await set_limit(rig, "product", CAMERA, 1000)
        await set_limit(rig, "account", "brand", 1000)

        # dry run: what would happen, nothing taken
        r = await rig.call("brand", "POST", "/v1/batches/dry-run", json={"device_ids": ids[:3]})
        assert r.status_code == 200, r.text
        assert [x["would_unbind"] for x in r.json()] == [True, True, True]
        r = await rig.call("mallory", "POST", "/v1/batches/dry-run", json={"device_ids": ids[:1]})
        assert r.json()[0]["cause"] == "unauthorized"
        assert await rig.counter("account", "brand") == 0

        # above the threshold (30): waits for a second administrator; the operator cannot approve it
        big = await submit(rig, "brand", ids[:40], reason="big return")
        assert big["status"] == "awaiting_approval"
        assert (await rig.call("brand", "POST", f"/v1/batches/{big['batch_id']}/approve")).status_code == 403
        await asyncio.sleep(1.5)
        assert (await rig.sim_json("GET", "/sim/unbinding/removals"))["total"] == 0
        r = await rig.call("admin1", "POST", f"/v1/batches/{big['batch_id']}/approve")
        assert r.status_code == 200, r.text
        assert r.json()["approved_by"] == "admin1"
        # cancel once a few are done: the rest are refused `cancelled`, none removed after
        await wait_removals(rig, 2)
        r = await rig.call("mallory", "POST", f"/v1/batches/{big['batch_id']}/cancel")
        assert r.status_code == 403, r.text  # someone else's batch: administrators only
        r = await rig.call("brand", "POST", f"/v1/batches/{big['batch_id']}/cancel")
        assert r.status_code == 200, r.text
        [done] = await wait_finished(rig, [big["batch_id"]], within=60)
        got = await results(rig, big["batch_id"])
        unbound = {x["device_id"] for x in got if x["result"] == "unbound"}
        assert {x["cause"] for x in got if x["result"] == "refused"} == {"cancelled"}
        assert 2 <= len(unbound) < 40
        await asyncio.sleep(1)
        truth = await rig.sim_json("GET", "/sim/unbinding/removals")
        assert set(truth["removals"]) == unbound
        assert truth["removed_twice"] == []
        assert await rig.counter("account", "brand") == len(unbound)

        # wired: the devices a LAN scan through the gateway found
        wired = ids[40:44]
        await rig.sim_json("POST", "/sim/unbinding/lan/gw-1", {"device_ids": wired})
        scan = await rig.sim_json("GET", "/sim/unbinding/lan/gw-1")
        batch = await submit(rig, "brand", scan["device_ids"], mode="wired", gateway_id="gw-1")
        [done] = await wait_finished(rig, [batch["batch_id"]], within=60)
        assert done["by_state"] == {"unbound": 4}, done

        # records: appended by the relay, queryable by operator / device / product / day, CSV export
        expected = len(unbound) + 4 + (40 - len(unbound))
        for _ in range(100):
            r = await rig.call("admin1", "GET", "/v1/records", params={"operator_id": "brand", "limit": 1000})
            if len(r.json()) == expected:
                break
            await asyncio.sleep(0.2)
        records = r.json()
        assert len(records) == expected
        r = await rig.call("admin1", "GET", "/v1/records", params={"device_id": wired[0]})
        assert [x["result"] for x in r.json()] == ["unbound"]
        r = await rig.call("admin1", "GET", "/v1/records.csv", params={"day": records[0]["day"]})
        assert r.headers["content-type"].startswith("text/csv")
        assert len(r.text.strip().splitlines()) == expected + 1
        r = await rig.call("admin1", "GET", f"/v1/batches/{batch['batch_id']}/results.csv")
        assert sorted(line.split(",")[3] for line in r.text.strip().splitlines()[1:]) == sorted(wired)
    finally:
        await rig.close()


async def test_database_restart_mid_batch_resumes_without_unbinding_any_device_twice(
    stack: Stack, unique: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a stack of its own (`just test`) the test restarts that stack's database; on the shared dev stack
    the service and the simulator use a MongoDB-wire server of the test's own (beside the dev stack's
    Pulsar), so no other run sees the restart."""
    async with restartable_database(stack, f"unb{unique}", monkeypatch) as (own, restart):

        async def restart_database(_: Rig) -> None:
            await asyncio.to_thread(restart)

        await interrupted_batch(own, unique, tmp_path, restart_database)


async def test_the_demo_unbinds_all_but_one_device_and_refuses_one_for_quota(rig: Rig) -> None:
    """`./dev demo`'s unbinding part (`fleet_devstack.demo.run_unbinding`, as the demo calls it) against the
    service: products registered to the stack's account, its daily limit lowered to leave room for all but
    one device, one batch, the results printed; the limits it changed are restored afterwards."""
    from fleet_devstack import demo

    sim = demo.Api("tuya-sim", rig.sim.url, rig.sim.control_token)
    unbinding = demo.Api("unbinding", rig.svc.url, rig.keys[demo.STACK_ACCOUNT])
    fleet = await asyncio.to_thread(demo.make_lifecycle_fleet, sim, 7, 5)
    names = {p["product_id"]: p["name"] for p in await asyncio.to_thread(sim.get, "/sim/products")}
    await asyncio.to_thread(unbinding.put, "/v1/quotas/account/devstack", {"limit": 50, "reason": "T-7"})
    said: list[str] = []
    await asyncio.to_thread(demo.run_unbinding, unbinding, fleet, 5, 60, names, said.append)

    text = "\n".join(said)
    assert "4 unbound, 1 refused (quota_exceeded)" in text, text
    assert text.count("quota_exceeded") >= 2, text  # the summary and the refused device's row
    assert "limits restored (account/devstack 50)" in text, text
    assert (await rig.call("admin1", "GET", "/v1/quotas/account/devstack")).json()["limit"] == 50
    truth = await rig.sim_json("GET", "/sim/unbinding/removals")
    assert (truth["total"], truth["removed_twice"]) == (4, [])
    assert await rig.counter("account", "devstack") == 4
