"""pairing end to end on the real stack: tuya-sim (Tuya's cloud and the devices), ingest and pairing as
processes, real Apache Pulsar and the MongoDB-wire server.

Sessions in every mode (EZ single and multi-device, AP, QR through a camera scan, BLE, combo, a custom
provisioner handed ssid, password and token) and every outcome (success, partial, Tuya's failure codes,
strong / medium / weak rebinds, an unexpected product recorded or removed again, cancel, expiry) run
concurrently; pairing is SIGKILLed halfway through the activations (or the database is restarted) and
comes back. Checked against the simulator's ground truth (its token results and devices): every session's
devices and codes equal Tuya's, the final states are the expected ones, no fact is published twice under
two event ids; used-up, expired and cancelled tokens are refused; malformed bodies get a 422 naming the
field and store nothing; no Wi-Fi password, assembled token or access secret is in any document or log
line of the run. `FLEET_E2E_PAIRING_SESSIONS` (default 40) scales it: 200 is the full run. Also the demo's
pairing part and `fleet pair` following a real session.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import secrets
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.pairing.support import (
    API_KEY,
    IPC,
    PRODUCT_MODES,
    SESSIONS,
    SETTLE_S,
    SITE_SSID,
    STATE,
    TOKEN_LIFETIME_S,
    Case,
    Fleet,
    Planned,
    Rig,
    all_documents,
    each,
    ok,
    open_rig,
    plan,
)
from tests.support import Stack, restartable_database

pytestmark = pytest.mark.e2e


@pytest.fixture
async def rig(stack: Stack, unique: str, tmp_path: Path) -> AsyncIterator[Rig]:
    async for r in open_rig(stack, unique, tmp_path):
        yield r


async def make_fleet(ctl: httpx.AsyncClient, sessions: int) -> Fleet:
    rounds = math.ceil(sessions / len(Case))
    await ok(
        await ctl.post(
            "/sim/fleet",
            json={
                "seed": 11,
                "devices": 12 * rounds + 12,  # bound: strong/medium/weak rebind candidates
                "homes": 12,
                "unbound": 24 * rounds + 8,  # factory-fresh: the rest (a quarter are cameras)
                "product_ids": list(PRODUCT_MODES),
                "online_ratio": 1.0,
            },
        )
    )
    truth = await ok(await ctl.get("/sim/truth", params={"messages": "false"}))
    return Fleet(truth["fleet"]["homes"], truth["fleet"]["devices"])


MALFORMED: list[tuple[dict[str, Any], str]] = [
    ({"home_id": "h", "mode": "EZ"}, "body.owner_uid"),
    ({"owner_uid": "u", "home_id": "h", "mode": "SMOKE"}, "body.mode"),
    ({"owner_uid": "u", "home_id": "h", "mode": "EZ", "expected_devices": 0}, "body.expected_devices"),
    ({"owner_uid": "u", "home_id": "h", "mode": "EZ", "expected_devices": 11}, "body.expected_devices"),
    ({"owner_uid": "u", "home_id": "h", "mode": "AP", "expected_devices": 2}, "body.expected_devices"),
    ({"owner_uid": "u", "home_id": "h", "mode": "BLE"}, "body.device_uuids"),
    ({"owner_uid": "u", "home_id": "h", "mode": "QR"}, "body.wifi"),
    ({"owner_uid": "u", "home_id": "h", "mode": "EZ", "surprise": 1}, "body.surprise"),
    (
        {"owner_uid": "u", "home_id": "h", "mode": "EZ", "unexpected_policy": "remove"},
        "body.unexpected_policy",
    ),
]


async def check_malformed_bodies(api: httpx.AsyncClient, password: str) -> None:
    bad_wifi = {"ssid": "x", "password": password[:5]}  # too short: named, never echoed
    cases = [
        *MALFORMED,
        ({"owner_uid": "u", "home_id": "h", "mode": "QR", "wifi": bad_wifi}, "body.wifi.password"),
    ]
    for body, field in cases:
        response = await api.post("/v1/pairing-sessions", json=body)
        assert response.status_code == 422, (body, response.text)
        problem = response.json()
        assert field in [e["field"] for e in problem["errors"]], (field, problem)
        assert password[:5] not in response.text
    listing = await ok(await api.get("/v1/pairing-sessions"))
    assert listing["items"] == []  # nothing stored


async def open_sessions(api: httpx.AsyncClient, planned: list[Planned]) -> None:
    async def one(p: Planned) -> None:
        for _ in range(5):  # 503: Tuya (the simulator, starved of CPU) did not answer; the key makes it safe
            response = await api.post("/v1/pairing-sessions", json=p.body)
            if response.status_code != 503:
                break
            await asyncio.sleep(1)
        answer = await ok(response, 201)
        p.session_id, p.token = answer["session"]["session_id"], answer["session"]["token"]
        p.assembled = answer["assembled_token"]
        if p.case in (Case.QR, Case.QR_WRONG_WIFI):
            p.qr_payload = answer["qr"]["payload"]
            assert answer["qr"]["svg"].startswith("<svg")
        if p.case in (Case.BLE, Case.COMBO):
            assert answer["ble_token"] == p.assembled[2:10]

    await each([one(p) for p in planned], limit=16)
    replay = await ok(await api.post("/v1/pairing-sessions", json=planned[0].body), 200)
    assert replay["replayed"] is True
    assert replay["session"]["session_id"] == planned[0].session_id
    assert replay["assembled_token"] is None


async def activate(ctl: httpx.AsyncClient, p: Planned, password: str) -> None:
    """What the devices of one session do, through the simulator."""
    token = p.assembled
    if p.case is Case.EXPIRED:
        return
    if p.case is Case.CUSTOM:  # custom-pairing.txt: a provisioner hands ssid, password and token over
        body: dict[str, Any] = {
            "device_ids": p.devices,
            "ssid": SITE_SSID,
            "password": password,
            "token": token,
        }
        await ok(await ctl.post("/sim/pairing/provision", json=body))
        return
    if p.case is Case.TIMEOUT:
        body = {"token": token, "device_ids": p.devices, "code": 106, "msg": "pairing timed out"}
        await ok(await ctl.post("/sim/pairing/fail", json=body))
    elif p.case in (Case.QR, Case.QR_WRONG_WIFI):
        await ok(
            await ctl.post(
                "/sim/pairing/provision", json={"qr_payload": p.qr_payload, "device_ids": p.devices}
            )
        )
    elif p.case is Case.AP_DELAYED:
        body = {"token": token, "device_ids": p.devices, "delay_s": 1.0}
        await ok(await ctl.post("/sim/pairing/activate-later", json=body))
    elif p.case is Case.EZ_MULTI:
        await ok(await ctl.post("/sim/pairing/activate", json={"token": token, "device_ids": p.devices[:2]}))
        body = {"token": token, "device_ids": p.devices[2:], "delay_s": 3.0}
        await ok(await ctl.post("/sim/pairing/activate-later", json=body))
    else:
        await ok(await ctl.post("/sim/pairing/activate", json={"token": token, "device_ids": p.devices}))


async def wait_for_truth(
    api: httpx.AsyncClient, ctl: httpx.AsyncClient, planned: list[Planned], within: float
) -> tuple[dict[str, Any], list[str]]:
    """Every session's view until all agree with Tuya's token results (or `within` passes): a cancelled
    session ends at once, its late activation arrives later; Tuya's truth is final once the tokens expired."""
    deadline = time.monotonic() + within
    while True:
        answers = await each([api.get(f"/v1/pairing-sessions/{p.session_id}") for p in planned])
        views = {
            p.session_id: r.json() for p, r in zip(planned, answers, strict=True) if r.status_code == 200
        }
        truth = await ok(await ctl.get("/sim/truth", params={"messages": "false"}))
        tokens = {t["token"]: t for t in truth["fleet"]["pairing_tokens"]}
        problems = mismatches(planned, views, tokens, truth["fleet"]["devices"])
        if not problems or time.monotonic() > deadline:
            return views, problems
        await asyncio.sleep(1)


def mismatches(
    planned: list[Planned], views: dict[str, Any], tokens: dict[str, Any], devices: dict[str, Any]
) -> list[str]:
    """Each session against the simulator's token result (and its devices) and the case's expected state."""
    problems: list[str] = []
    for p in planned:
        if p.session_id not in views:
            problems.append(f"{p.case.value} {p.session_id}: not found")
            continue
        view, truth = views[p.session_id], tokens[p.token]
        by_kind: dict[str, set[str]] = defaultdict(set)
        failed: set[tuple[str | None, str]] = set()
        for d in view["devices"]:
            by_kind[d["outcome"]].add(d["device_id"])
            if d["outcome"] == "failed":
                failed.add((d["device_id"], d["failure"]["code"]))
        success = {d["device_id"] for d in truth["success"]}
        unexpected = (Case.UNEXPECTED, Case.UNEXPECTED_REMOVED)
        kind = (
            "late" if p.case is Case.CANCELLED else "unexpected_product" if p.case in unexpected else "paired"
        )
        where = f"{p.case.value} {p.session_id}"
        if by_kind[kind] != success:
            problems.append(f"{where}: {kind} {sorted(by_kind[kind])} != Tuya's {sorted(success)}")
        tuya_failed = {(f["device_id"], f["code"]) for f in truth["failed"]}
        if failed != tuya_failed:
            problems.append(f"{where}: failed {sorted(failed)} != Tuya's {sorted(tuya_failed)}")
        if view["state"] != STATE[p.case]:
            problems.append(f"{where}: state {view['state']} != {STATE[p.case]}")
        causes = [d["failure"]["cause"] for d in view["devices"] if d["failure"]]
        want_cause = {
            Case.STRONG: "bound_to_another_account",
            Case.TIMEOUT: "timeout",
            Case.QR_WRONG_WIFI: "wrong_wifi_password",
        }.get(p.case)
        if want_cause and causes != [want_cause]:
            problems.append(f"{where}: causes {causes}")
        if p.case is Case.MEDIUM and [d["previous_owner_uid"] for d in view["devices"]] != [p.previous_owner]:
            problems.append(f"{where}: previous owner {view['devices']} != {p.previous_owner}")
        if p.case in unexpected:  # removed again through Tuya's OpenAPI only when the policy says so
            removal = "done" if p.case is Case.UNEXPECTED_REMOVED else None
            if [d["removal"] for d in view["devices"]] != [removal]:
                problems.append(f"{where}: removal {view['devices']} != {removal}")
            if devices[p.devices[0]]["bound"] != (removal is None):
                problems.append(f"{where}: bound in Tuya's cloud: {devices[p.devices[0]]['bound']}")
    return problems


def check_events(rig: Rig, planned: list[Planned], views: dict[str, Any]) -> None:
    """One event id per fact: a redelivery or a relay after the kill may repeat an id, never add one."""
    ids: dict[tuple[str, str, str | None], set[str]] = defaultdict(set)
    for body, _ in rig.events.messages:
        data = body["data"]
        ids[(body["type"], data["token"], data.get("device_id"))].add(body["id"])
    twice = {k: v for k, v in ids.items() if len(v) > 1}
    assert not twice, f"facts published under two event ids: {list(twice.items())[:3]}"
    for p in planned:
        view = views[p.session_id]
        paired = [d["device_id"] for d in view["devices"] if d["outcome"] == "paired"]
        for device in paired:
            assert ("pairing.device.paired.v1", p.token, device) in ids, (p.case, device)
        assert ("pairing.session.ended.v1", p.token, None) in ids, p.case
        notified = ("pairing.device.previous_owner_notified.v1", p.token, p.devices[0] if p.devices else None)
        assert (notified in ids) == (p.case is Case.MEDIUM), (p.case, view["devices"])


async def check_refusals(api: httpx.AsyncClient, planned: list[Planned]) -> None:
    want = {Case.EZ: "used_up", Case.CUSTOM: "used_up", Case.EXPIRED: "expired", Case.CANCELLED: "cancelled"}
    for p in planned:
        if p.case in want:
            problem = await ok(await api.get(f"/v1/pairing-tokens/{p.token}"), 409)
            assert problem["reason"] == want[p.case], (p.case, problem)


async def check_no_secrets(rig: Rig, planned: list[Planned], passwords: list[str]) -> None:
    blob = await all_documents(rig.stack.mongodb_uri, rig.pairing.database)
    logs = [path.read_bytes() for path in rig.logs]
    secrets_ = [*passwords, rig.secret, *(p.assembled for p in planned)]
    for secret in secrets_:
        needle = secret.encode()
        assert needle not in blob, "a secret is stored in the pairing database"
        for path, text in zip(rig.logs, logs, strict=True):
            assert needle not in text, f"a secret is in {path.name}"


async def run_scenario(rig: Rig, sessions: int, interrupt: Callable[[], Awaitable[None]]) -> None:
    password = 'pässwörd "' + secrets.token_urlsafe(8)
    async with rig.sim.control() as ctl, rig.pairing.client() as api:
        fleet = await make_fleet(ctl, sessions)
        await ok(await ctl.put("/sim/pairing/networks", json={"networks": {SITE_SSID: password}}))
        await check_malformed_bodies(api, password)
        planned = plan(fleet, sessions, password)
        await open_sessions(api, planned)
        for p in planned:
            if p.case is Case.CANCELLED:
                await ok(await api.post(f"/v1/pairing-sessions/{p.session_id}/cancel"))
            if p.case is Case.CUSTOM:  # the provisioner asks whether the token is honoured before using it
                check = await ok(await api.get(f"/v1/pairing-tokens/{p.token}"))
                assert (check["honoured"], check["session_id"]) == (True, p.session_id), check
        half = len(planned) // 2
        await each([activate(ctl, p, password) for p in planned[:half]], limit=8)
        await interrupt()
        await each([activate(ctl, p, password) for p in planned[half:]], limit=8)
        await rig.pairing.wait_ready()
        views, problems = await wait_for_truth(api, ctl, planned, within=TOKEN_LIFETIME_S + SETTLE_S + 120)
        assert problems == [], f"{len(problems)} sessions differ from Tuya's truth: {problems[:5]}"
        await asyncio.sleep(2)  # the last relays reach the reader
        check_events(rig, planned, views)
        await check_refusals(api, planned)
    await check_no_secrets(rig, planned, [password, password + "-wrong"])


async def test_sessions_in_every_mode_match_tuyas_truth_through_a_sigkill(rig: Rig) -> None:
    async def kill_and_restart() -> None:
        await asyncio.sleep(0.3)  # pushes of the first half in flight
        rig.pairing.kill()
        await asyncio.sleep(1)
        rig.pairing.start()

    await run_scenario(rig, SESSIONS, kill_and_restart)


async def test_a_database_restart_loses_no_outcome(
    stack: Stack, unique: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scenario through a database restart: on the shared dev stack the simulator, ingest and pairing
    use a MongoDB-wire server of the test's own (`restartable_database`), so no other run sees it."""
    async with restartable_database(stack, f"pair{unique}", monkeypatch) as (own, restart):

        async def restart_database() -> None:
            await asyncio.to_thread(restart)

        async with contextlib.aclosing(open_rig(own, unique, tmp_path)) as rigs:
            async for rig in rigs:
                await run_scenario(rig, len(Case), restart_database)


async def test_the_demo_pairs_a_factory_fresh_device_from_its_qr_code(rig: Rig) -> None:
    """`./dev demo`'s pairing part (`fleet_devstack.demo.run_pairing`, as the demo calls it) against the
    service: a QR session for a home of the simulator's fleet, a factory-fresh device scanning the payload,
    the session followed until it succeeded with that device paired from Tuya's push."""
    from fleet_devstack import demo

    async with rig.sim.control() as ctl:
        fleet = await make_fleet(ctl, len(Case))
        truth = await ok(await ctl.get("/sim/truth", params={"messages": "false"}))
    sim = demo.Api("tuya-sim", rig.sim.url, rig.sim.control_token)
    pairing = demo.Api("pairing", rig.pairing.url, API_KEY)
    said: list[str] = []
    await asyncio.to_thread(demo.run_pairing, sim, pairing, truth["fleet"], 60, said.append)
    text = "\n".join(said)
    assert "paired; the session succeeded" in text, text
    [session_id] = re.findall(r"QR session (ps_\S+)", text)
    async with rig.pairing.client() as api:
        view = await ok(await api.get(f"/v1/pairing-sessions/{session_id}"))
    assert view["state"] == "succeeded"
    [device] = view["devices"]
    assert device["outcome"] == "paired"
    assert fleet.devices[device["device_id"]]["bound"] is False  # factory-fresh before the demo
    await asyncio.sleep(2)  # the relay reaches the reader
    types = [body["type"] for body, _ in rig.events.messages if body["data"].get("session_id") == session_id]
    assert types[0] == "pairing.token.issued.v1", types
    assert "pairing.device.paired.v1" in types, types
    assert "pairing.session.ended.v1" in types, types


async def test_fleet_pair_shows_the_devices_joining_a_real_session(rig: Rig) -> None:
    """`fleet pair` (the console script) against the service: it prints the token, follows the session
    while two devices activate with it through the simulator, and ends with both paired, exit 0."""
    async with rig.sim.control() as ctl:
        fleet = await make_fleet(ctl, len(Case))
        home = fleet.homes[0]
        devices = [d for d in fleet.free() if fleet.devices[d]["product_id"] != IPC][:2]
        env = {**os.environ, "FLEET_PAIRING_URL": rig.pairing.url, "FLEET_API_KEY": API_KEY}
        args = ["--owner", home["owner_uid"], "--home", home["home_id"], "--expect", "2", "--timeout", "90"]
        cli = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "fleet"),
            "pair",
            *args,
            env={**env, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            assert cli.stdout is not None
            printed: list[str] = []
            while not any(line.startswith("token (for the device): ") for line in printed):
                line = await asyncio.wait_for(cli.stdout.readline(), 30)
                assert line, f"fleet pair ended early: {printed}"
                printed.append(line.decode().strip())
            token = printed[-1].removeprefix("token (for the device): ")
            await ok(
                await ctl.post("/sim/pairing/activate", json={"token": token, "device_ids": devices[:1]})
            )
            await asyncio.sleep(2)  # the first device joins while the CLI follows
            await ok(
                await ctl.post("/sim/pairing/activate", json={"token": token, "device_ids": devices[1:]})
            )
            out, err = await asyncio.wait_for(cli.communicate(), 120)
        finally:
            if cli.returncode is None:
                cli.kill()
                await cli.wait()
    text = "\n".join(printed) + out.decode()
    assert cli.returncode == 0, (text, err.decode())
    assert "succeeded" in text, text
    for device in devices:
        assert device in text, text
    assert token not in err.decode()  # the progress line names counts and causes, never the token
