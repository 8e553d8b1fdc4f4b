"""ingest end to end behind the real simulator: `fleet-tuya-sim serve` (a process, chaos on) publishes a fleet
of 1,000 devices to Tuya's topic layout on the real Apache Pulsar; ingest (a process, SIGKILLed mid-stream and
restarted) maps it onto the internal topics; the simulator's ground truth says what must arrive.

Checked against the truth: every message the simulator published becomes exactly one event after dedup by
event id (its chaos duplicates are dropped, redeliveries after the kill carry the same id), with the content
the message had, in per-device publication order; every malformed message is dead-lettered with its reason;
nothing else reaches either topic."""

from __future__ import annotations

import asyncio
import base64
import random
import secrets
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pulsar
import pytest
from motor.motor_asyncio import AsyncIOMotorClient
from pulsar import asyncio as pa

from fleet_contracts import topics
from fleet_ingest.adapters.dedup_store import COLLECTION as SEEN_COLLECTION
from fleet_ingest.domain.dedup import event_id
from tests.e2e.ingest.sim_support import (
    DEAD_LETTER_KINDS,
    EVENT_TYPE_OF_KIND,
    SimProcess,
    event_matches,
    expectation,
    published_messages,
)
from tests.e2e.ingest.support import IngestProcess, TopicReader
from tests.support import Stack, until

pytestmark = pytest.mark.e2e

DEVICES = 1000
REPORT_RATE = 250.0  # status reports/s during the scenario (each goes out as protocol 4 and 1000)
SCENARIO_S = 8.0
MALFORMED = 1000  # dead-letter kinds, in chunks over the run
MALFORMED_CHUNKS = 10
UNKNOWN_PROTOCOL = 20  # decodable messages of an unknown protocol: "unknown" events, not dead letters
REPLAYS = 300  # late re-pushes of earlier messages, after the restart
KILL_AFTER_EVENTS = 3000
SETTINGS: dict[str, str | int | float] = {
    "message_family": "both",  # legacy 4/20 and IoT Core 1000/1001/1002, as Tuya sends with both configured
    "chaos_duplicate_ratio": 0.1,
    # duplicates land up to a window away from their original: past the in-flight check, into the seen window
    "chaos_shuffle_window": 200,
    "ota_step_ms": 200,
    "ota_step_pct": 25,
    "pairing_ez_max_devices": 100,
    "rate_limit_rps": 0,
    "devices": 1,  # the startup fleet; the test creates its own through the control API
}


@dataclass
class Rig:
    access_id: str
    database: str
    mongodb_uri: str
    sim: SimProcess
    ingest: IngestProcess
    events: TopicReader
    dead_letters: TopicReader


@pytest.fixture
async def rig(stack: Stack, unique: str, tmp_path: Path) -> AsyncIterator[Rig]:
    access_id = f"ingsim{unique}"
    secret = secrets.token_hex(16)
    sim = SimProcess(stack, access_id, secret, tmp_path / "sim.log", **SETTINGS)
    database = f"ingest_sim_{unique}"
    ingest = IngestProcess(stack, access_id, secret, database, tmp_path / "ingest.log")
    client = pa.Client(stack.pulsar_url, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Warn))
    events = await TopicReader.open(client, topics.DEVICE_EVENTS.name, f"e2e-sim-{unique}", access_id)
    dead = await TopicReader.open(client, topics.INGEST_TUYA_DEAD_LETTER.name, f"e2e-sim-{unique}", access_id)
    try:
        sim.start()
        await sim.wait_ready()  # it provisions Tuya's topic, so it goes first
        ingest.start()
        await ingest.wait_ready()
        yield Rig(access_id, database, stack.mongodb_uri, sim, ingest, events, dead)
    finally:
        ingest.kill()
        sim.stop()
        await events.close()
        await dead.close()
        await client.close()


async def recorded_event_ids(rig: Rig) -> set[str]:
    """The event ids of what ingest's dedup store holds as published (its `seen_messages` keys)."""
    client: AsyncIOMotorClient[Any] = AsyncIOMotorClient(rig.mongodb_uri)
    try:
        prefix = f"{rig.access_id}:"
        ids = [d["_id"] async for d in client[rig.database][SEEN_COLLECTION].find({}, {"_id": 1})]
    finally:
        client.close()
    return {event_id(rig.access_id, str(i)[len(prefix) :]) for i in ids if str(i).startswith(prefix)}


async def settled(count: Callable[[], int], quiet_s: float = 1.0, within: float = 30.0) -> int:
    """Waits until `count()` has not changed for `quiet_s`; returns it."""
    deadline = time.monotonic() + within
    last, since = count(), time.monotonic()
    while time.monotonic() - since < quiet_s and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        if count() != last:
            last, since = count(), time.monotonic()
    return last


async def call(
    ctl: httpx.AsyncClient, method: str, path: str, ok: tuple[int, ...] = (200,), **kw: Any
) -> Any:
    response = await ctl.request(method, path, **kw)
    assert response.status_code in ok, f"{method} {path}: {response.status_code} {response.text[:300]}"
    return response.json() if response.status_code == 200 else None


async def each(calls: list[Awaitable[Any]], limit: int = 16) -> list[Any]:
    gate = asyncio.Semaphore(limit)

    async def one(c: Awaitable[Any]) -> Any:
        async with gate:
            return await c

    return await asyncio.gather(*(one(c) for c in calls))


class Lifecycle:
    """Drives what happens to devices beside the status stream, through the control API; 409 means churn took
    the device offline first (an upgrade cannot start then), which the ground truth records either way."""

    def __init__(
        self, ctl: httpx.AsyncClient, devices: dict[str, dict[str, Any]], rng: random.Random
    ) -> None:
        self.ctl = ctl
        self.rng = rng
        self.by_product: dict[str, list[str]] = defaultdict(list)
        for device_id, d in devices.items():
            self.by_product[d["product_id"]].append(device_id)
        for ids in self.by_product.values():
            rng.shuffle(ids)
        self.devices = devices
        self.started_upgrades = 0

    def take(self, product_id: str, n: int) -> list[str]:
        ids = self.by_product[product_id]
        taken, self.by_product[product_id] = ids[:n], ids[n:]
        return taken

    async def malformed(self, count: int, unknown: int) -> None:
        await call(
            self.ctl, "POST", "/sim/chaos/malformed", json={"count": count, "kinds": DEAD_LETTER_KINDS}
        )
        await call(
            self.ctl, "POST", "/sim/chaos/malformed", json={"count": unknown, "kinds": ["unknown_protocol"]}
        )

    async def renames(self, ids: list[str]) -> None:
        await each(
            [call(self.ctl, "POST", f"/sim/devices/{d}/rename", json={"name": f"room {d[-6:]}"}) for d in ids]
        )

    async def dp_renames(self, ids: list[str], dp_of: dict[str, int]) -> None:
        await each(
            [
                call(
                    self.ctl,
                    "POST",
                    f"/sim/devices/{d}/dps/{dp_of[self.devices[d]['product_id']]}/rename",
                    json={"name": "renamed dp"},
                )
                for d in ids
            ]
        )

    async def removals(self, ids: list[str]) -> None:
        await each(
            [
                call(self.ctl, "POST", f"/sim/devices/{d}/remove", json={"reset": i % 2 == 0})
                for i, d in enumerate(ids)
            ]
        )

    async def upgrades(self, product_id: str, channel: int, ids: list[str], outcome: str) -> None:
        for d in ids:
            await call(
                self.ctl,
                "POST",
                "/sim/ota/plan",
                json={"device_id": d, "channel": channel, "outcome": outcome},
            )
        results = await each(
            [
                call(
                    self.ctl,
                    "POST",
                    "/sim/ota/start",
                    ok=(200, 409),
                    json={"device_id": d, "channel": channel},
                )
                for d in ids
            ]
        )
        self.started_upgrades += sum(1 for r in results if r is not None)

    async def pair(self, uid: str, ids: list[str]) -> list[dict[str, Any]]:
        token = await call(self.ctl, "POST", "/sim/pairing/tokens", json={"uid": uid, "pairing_type": "EZ"})
        outcomes: list[dict[str, Any]] = await call(
            self.ctl,
            "POST",
            "/sim/pairing/activate",
            json={"token": token["assembled_token"], "device_ids": ids},
        )
        return outcomes


async def test_simulated_fleet_arrives_exactly_once_in_order_with_malformed_input_and_a_sigkill(
    rig: Rig,
) -> None:
    events, dead = rig.events.messages, rig.dead_letters.messages
    started = time.monotonic()
    rng = random.Random(5)
    async with rig.sim.control() as ctl:
        # -- a fleet of 1,000 devices, every one of them online and reporting at least once -----------------
        fleet = await call(
            ctl,
            "POST",
            "/sim/fleet",
            json={"seed": 23, "devices": DEVICES, "homes": 150, "online_ratio": 0.9},
        )
        assert fleet["devices"] == DEVICES
        state = (await call(ctl, "GET", "/sim/truth", params={"messages": "false"}))["fleet"]
        devices: dict[str, dict[str, Any]] = state["devices"]
        products = {p["product_id"]: p for p in await call(ctl, "GET", "/sim/products")}
        plug, bulb, sensor, camera = (
            "sim0plug0cz00001",
            "sim0bulb0dj00002",
            "sim0th00wsdcg003",
            "sim0ipc00sp00004",
        )
        assert {plug, bulb, sensor, camera} <= set(products)
        dp_of = {pid: p["dps"][0]["dp_id"] for pid, p in products.items()}
        owners = sorted({h["owner_uid"] for h in fleet["homes"]})
        await each(
            [call(ctl, "POST", f"/sim/devices/{d}/online") for d, s in devices.items() if not s["online"]]
        )
        await call(ctl, "POST", "/sim/reports", json={"device_ids": list(devices), "max_dps": 3})

        # -- the stream: status reports with churn, beside it lifecycle, OTA and malformed input ------------
        await call(
            ctl,
            "POST",
            "/sim/scenario",
            json={"rate": REPORT_RATE, "duration_s": SCENARIO_S, "churn_rate": 0.004, "max_dps": 3},
        )
        life = Lifecycle(ctl, devices, rng)
        chunk = MALFORMED // MALFORMED_CHUNKS
        unknown = UNKNOWN_PROTOCOL // MALFORMED_CHUNKS
        for release in (
            {"product_id": plug, "channel": 0, "version": "1.3.0"},
            {"product_id": bulb, "channel": 0, "version": "2.2.0"},
            {"product_id": camera, "channel": 9, "version": "1.2.0", "timeout_s": 2},
        ):
            await call(ctl, "POST", "/sim/firmware", json=release)
        removed = life.take(plug, 20) + life.take(bulb, 10) + life.take(camera, 10)
        first_half = [
            life.renames(life.take(plug, 15) + life.take(bulb, 15) + life.take(sensor, 15)),
            life.dp_renames(life.take(plug, 10) + life.take(sensor, 10), dp_of),
            life.removals(removed),
            life.upgrades(plug, 0, life.take(plug, 25), "success"),
            life.upgrades(bulb, 0, life.take(bulb, 10), "failure"),
        ]
        for step in first_half:
            await step
            await life.malformed(chunk, unknown)
            await asyncio.sleep(0.3)

        # -- SIGKILL ingest mid-stream, restart it ----------------------------------------------------------
        await until(
            lambda: len(events) >= KILL_AFTER_EVENTS, 60, lambda: f"{len(events)} events before the kill"
        )
        assert rig.ingest.proc is not None
        assert rig.ingest.proc.poll() is None, "ingest stays up on malformed input"
        # Mid-stream: in a burst (every device reports), with messages between receipt and ack; the stream
        # goes on after the kill (the second half below is published after it).
        scenario_running = (await call(ctl, "GET", "/sim/scenario"))["running"]
        burst = asyncio.ensure_future(
            call(ctl, "POST", "/sim/reports", json={"device_ids": list(devices), "max_dps": 3})
        )
        in_flight_at_kill = 0.0
        deadline = time.monotonic() + 60
        while in_flight_at_kill <= 0:
            assert time.monotonic() < deadline, "ingest never had a message in flight"
            in_flight_at_kill = await asyncio.to_thread(rig.ingest.metric, "fleet_ingest_in_flight_messages")
        rig.ingest.kill()
        killed_at = len(events)
        await burst
        published_at_kill = (await call(ctl, "GET", "/sim/truth", params={"messages": "false"}))["summary"][
            "published"
        ]
        await asyncio.sleep(1.0)  # the stream goes on meanwhile
        await settled(lambda: len(events) + len(dead))  # whatever the killed process sent has arrived
        before_restart, dead_before_restart = len(events), len(dead)
        # What the killed process had recorded as published: a re-push of any of it must not be published
        # again by the next process, however late it comes (the store is checked whenever the window misses).
        recorded_at_kill = await recorded_event_ids(rig)
        assert recorded_at_kill
        rig.ingest.start()
        await rig.ingest.wait_ready()

        rebind_owner = owners[0]
        second_half = [
            life.upgrades(camera, 9, life.take(camera, 5), "timeout"),
            life.renames(life.take(camera, 10)),
            life.removals(life.take(sensor, 10)),
            life.upgrades(plug, 0, life.take(plug, 10), "success"),
            life.dp_renames(life.take(bulb, 10), dp_of),
        ]
        for step in second_half:
            await step
            await life.malformed(chunk, unknown)
            await asyncio.sleep(0.3)
        # Tuya re-pushes earlier messages, long after them: from before the kill and after the restart.
        replayed = await call(ctl, "POST", "/sim/chaos/replay", json={"count": REPLAYS})
        assert len(replayed["tids"]) == REPLAYS
        # Pairing: removed devices are paired again; bound ones of other owners are taken over (weak, medium)
        # or refused (strong: pairing code 113 "bound in the cloud", no message).
        repaired = await life.pair(owners[-1], removed[:20])
        assert all(o["ok"] for o in repaired), repaired
        takeover = [d for d in life.take(plug, 15) + life.take(bulb, 15) if devices[d]["uid"] != rebind_owner]
        refused = [d for d in life.take(camera, 5) if devices[d]["uid"] != rebind_owner]
        outcomes = {o["device_id"]: o for o in await life.pair(rebind_owner, takeover + refused)}
        assert all(outcomes[d]["ok"] for d in takeover)
        assert all(not outcomes[d]["ok"] and outcomes[d]["code"] == "113" for d in refused)
        await call(ctl, "POST", "/sim/scenario/wait", params={"timeout": 120}, timeout=150)

        # -- every upgrade to its end (churn may have left a device offline mid-download), then the truth ---
        async def upgrades_final() -> bool:
            jobs = (await call(ctl, "GET", "/sim/truth", params={"messages": "false"}))["fleet"]["ota_jobs"]
            running = [j["device_id"] for j in jobs if j["upgrade_status"] not in (3, 4, 7)]
            await each([call(ctl, "POST", f"/sim/devices/{d}/online") for d in running])
            return not running

        deadline = time.monotonic() + 60
        while not await upgrades_final():
            assert time.monotonic() < deadline, "upgrades did not finish"
            await asyncio.sleep(0.3)
        flushed = await call(ctl, "POST", "/sim/flush", params={"timeout": 60}, timeout=90)
        assert flushed["flushed"]
        records = await published_messages(ctl)
        summary = (await call(ctl, "GET", "/sim/truth", params={"messages": "false"}))["summary"]
        final_jobs = (await call(ctl, "GET", "/sim/truth", params={"messages": "false"}))["fleet"]["ota_jobs"]
    published_at = time.monotonic()

    expect = expectation(records)
    assert summary["replayed"] >= REPLAYS
    assert len(records) > published_at_kill > killed_at, "killed mid-stream"
    assert summary["published"] == len(records)
    assert summary["malformed"] == MALFORMED + UNKNOWN_PROTOCOL
    originals = [r for r in expect.dead_letters.values() if r["duplicate_of"] is None]
    assert len(originals) == MALFORMED
    assert summary["duplicates"] == expect.duplicates + len(expect.dead_letters) - MALFORMED
    assert sum(1 for r in records if r["replayed"] and r["duplicate_of"]) == summary["replayed"]
    kinds = Counter(r["kind"] for r in records if r["duplicate_of"] is None)
    missing = set(EVENT_TYPE_OF_KIND) - set(kinds)
    assert not missing, f"the run published no {missing}"
    assert {j["upgrade_status"] for j in final_jobs} == {3, 4, 7}
    assert life.started_upgrades >= 30
    reporting = {r["key"] for r in records if r["kind"] == "statusReport"}
    assert len(reporting) == DEVICES, "every device of the fleet streams"

    # -- wait for ingest to deliver all of it ---------------------------------------------------------------
    def distinct_events() -> int:
        return len({body["id"] for body, _ in events})

    def distinct_dead() -> int:
        return len({body["data"]["message_id"] for body, _ in dead})

    await until(
        lambda: distinct_events() >= len(expect.facts) and distinct_dead() >= len(expect.dead_letters),
        150,
        lambda: (
            f"{distinct_events()}/{len(expect.facts)} events, "
            f"{distinct_dead()}/{len(expect.dead_letters)} dead letters"
        ),
    )
    await asyncio.sleep(2)  # anything extra would show up now
    delivered_at = time.monotonic()

    # -- exactly once: one event id per fact, nothing else --------------------------------------------------
    fact_of_event: dict[str, str] = {}
    first_index: dict[str, int] = {}
    order: dict[str, list[str]] = defaultdict(list)
    repeats: list[int] = []
    late_repushes = 0  # repeats from a late re-push of a message the killed process published, unrecorded
    for index, (body, props) in enumerate(events):
        message_id = props["tuya-message-id"]
        assert message_id in expect.fact_of_message, f"an event from no published message: {body}"
        tid = expect.fact_of_message[message_id]
        assert fact_of_event.setdefault(body["id"], tid) == tid, "one event id for two facts"
        assert props.get("traceparent")
        if body["id"] in first_index:
            # Only what the killed process had published comes again (unacked, or not yet recorded as seen),
            # and then as the same event. Chaos duplicates never get through otherwise, nor does a late
            # re-push of anything the killed process had recorded (the restarted one checks the store).
            first = first_index[body["id"]]
            assert index >= before_restart > first, (index, first, before_restart, body)
            assert body == events[first][0]
            repeats.append(index)
            if expect.by_message[message_id]["replayed"]:
                assert body["id"] not in recorded_at_kill, f"a late re-push published again: {body}"
                late_repushes += 1
            continue
        first_index[body["id"]] = index
        fact = expect.facts[tid]
        mismatch = event_matches(body, fact.record)
        assert mismatch is None, f"{fact.record['kind']} {tid}: {mismatch}"
        order[body["subject"]].append(tid)
    by_fact = Counter(fact_of_event.values())
    assert set(by_fact) == set(expect.facts), "facts without an event"
    assert max(by_fact.values()) == 1
    assert len(fact_of_event) == len(expect.facts)

    # -- per-device order: as each device's messages were published -----------------------------------------
    assert dict(order) == expect.per_device()

    # -- malformed input: every copy dead-lettered once, with the reason the simulator says -----------------
    seen_dead: set[str] = set()
    for index, (body, _) in enumerate(dead):
        data = body["data"]
        record = expect.dead_letters.get(data["message_id"])
        assert record is not None, f"a dead letter for a good message: {data['reason']}"
        if data["message_id"] in seen_dead:
            assert index >= dead_before_restart, "a dead letter twice without a kill in between"
            continue
        seen_dead.add(data["message_id"])
        assert data["error_type"] == record["expected"], (
            record["malformed"],
            data["error_type"],
            data["reason"],
        )
        assert data["reason"]
        assert data["key"] == record["key"]
        assert data["subscription"] == topics.tuya_subscription(rig.access_id)
        assert base64.b64decode(data["payload_base64"])
    assert seen_dead == set(expect.dead_letters)
    reasons = Counter(r["expected"] for r in expect.dead_letters.values())
    assert set(reasons) == {"decode", "decrypt", "payload"}

    assert rig.ingest.get("/healthz")[0] == 200
    assert rig.ingest.stop_gracefully()
    print(
        f"\n{len(records)} messages published ({expect.duplicates} chaos duplicates of good ones, "
        f"{len(expect.dead_letters)} malformed copies incl. duplicates, "
        f"{summary['malformed']} malformed originals), "
        f"{len(expect.facts)} facts from {DEVICES} devices -> {len(events)} events received, "
        f"{len(fact_of_event)} distinct, {len(repeats)} repeats after the kill (at {killed_at} events; "
        f"{late_repushes} of them late re-pushes (of {summary['replayed']}) it had not recorded); "
        f"{len(dead)} dead letters ({dict(reasons)}); "
        f"stream {published_at - started:.1f}s, delivered +{delivered_at - published_at:.1f}s; "
        f"killed with {in_flight_at_kill:.0f} in flight, scenario running: {scenario_running}"
    )
