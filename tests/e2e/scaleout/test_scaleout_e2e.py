"""Scale-out on one machine (issue 14): TWO replicas of every consumer service on the real stack under load,
one of each SIGKILLed mid-stream, then restarted.

tuya-sim publishes a fleet's status reports, presence churn, pairing activations and firmware upgrade progress
on Tuya's topic layout (11 partitions, chaos duplicates on); ingest x2 split the partitions (one Failover
subscription), status x2, pairing x2 and ota x2 share KeyShared subscriptions on the device topic (ota's two
also dispatch the rollout from one database). Mid-stream, mid-wave of a firmware rollout to the fleet's plugs,
one replica of each is SIGKILLed (no drain): the survivor takes over its partitions / key ranges and gets its
unacknowledged messages again; then the killed one is restarted and takes a share back. Checked against the
simulator's ground truth:
- ingest: one event per fact, none lost, each device's events in publication order (repeats dropped);
- status: every shadow's DPs (device time and raw value) and presence equal the simulator's; its shadow and
  presence events, repeats dropped, come per device in version order and chain without a gap to the shadow;
- pairing: every session's device is Tuya's result for its token and the session succeeded (its poll of
  Tuya is slowed to 5 minutes, so the device topic is the only way in), one event id per fact;
- ota: every plug of the rollout (those bound by the pairing sessions join it) ends succeeded on the new
  firmware (the simulator's device), or failed where the simulator was told to fail it or Tuya refused its
  command as offline (2001: the presence churn; one attempt per device); at least half succeed; Tuya received
  exactly one command per recorded attempt (none twice for one attempt, across the kill); the release's
  counters equal a recount of ota's documents; the kill came while plugs were still pending;
- both replicas of each service consumed before the kill (their /metrics and the broker's consumer stats),
  ingest's partitions were split between them, and the killed ones held unacknowledged messages.

On the shared dev stack other runs' status processes (branches without status's tenant filter) may publish
events about this test's devices under its tenant: status's events are taken from its replicas' producers.

Size: FLEET_E2E_SCALEOUT_DEVICES (default 300), FLEET_E2E_SCALEOUT_RATE (status reports/s, 100),
FLEET_E2E_SCALEOUT_SECONDS (20), FLEET_E2E_SCALEOUT_SESSIONS (20); e.g. 3000 / 800 / 60 / 100 for a larger
run. The rollout's dispatch rate, FLEET_E2E_SCALEOUT_OTA_PER_MINUTE (90 per region: at the default size
about 75 plugs over two regions, a wave of ~25 s that the kill falls into).
`-s` prints what happened.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pulsar
import pytest
from motor.motor_asyncio import AsyncIOMotorClient
from pulsar import asyncio as pa

from fleet_contracts import topics
from tests.e2e.ingest.sim_support import SimProcess, expectation, published_messages
from tests.e2e.ingest.support import TopicReader
from tests.e2e.scaleout.support import (
    PLUG,
    STATUS_API_KEY,
    ProducerReader,
    Replicas,
    activate,
    all_shadows,
    api_client,
    call,
    commanded,
    each,
    expected_shadows,
    handled,
    ingest_problems,
    ingest_replicas,
    last_reports,
    open_rollout,
    open_sessions,
    ota_documents,
    ota_problems,
    ota_replicas,
    pairing_problems,
    pairing_replicas,
    producers_of,
    published_by,
    rollout_completed,
    rollout_state,
    rollout_totals,
    session_views,
    shadow_problems,
    status_event_problems,
    status_replicas,
)
from tests.support import Stack, drop_subscription

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

T = TypeVar("T")
UNTRACED = ("FLEET_ZIPKIN_ENDPOINT", "OTEL_EXPORTER_ZIPKIN_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")

DEVICES = int(os.environ.get("FLEET_E2E_SCALEOUT_DEVICES", "300"))
RATE = float(os.environ.get("FLEET_E2E_SCALEOUT_RATE", "100"))
SCENARIO_S = float(os.environ.get("FLEET_E2E_SCALEOUT_SECONDS", "20"))
SESSIONS = int(os.environ.get("FLEET_E2E_SCALEOUT_SESSIONS", "20"))
OTA_PER_MINUTE = float(os.environ.get("FLEET_E2E_SCALEOUT_OTA_PER_MINUTE", "90"))
SIM_SETTINGS: dict[str, str | int | float] = {
    "chaos_duplicate_ratio": 0.05,  # Tuya delivers at least once: copies ingest must drop
    "rate_limit_rps": 0,
    "devices": 1,  # the startup fleet; the test creates its own
    "ota_step_ms": 200,  # an upgrade: five progress pushes ~200 ms apart
    "ota_step_pct": 25,
}


@dataclass
class Rig:
    stack: Stack
    seed: int
    sim: SimProcess
    ingest: Replicas
    status: Replicas
    pairing: Replicas
    ota: Replicas
    device_events: TopicReader
    shadow_events: TopicReader
    presence_events: TopicReader
    pairing_events: TopicReader
    logs: Path

    @property
    def services(self) -> tuple[Replicas, Replicas, Replicas, Replicas]:
        return (self.ingest, self.status, self.pairing, self.ota)

    @property
    def key_shared(self) -> tuple[Replicas, Replicas, Replicas]:
        return (self.status, self.pairing, self.ota)


@pytest.fixture
async def rig(stack: Stack, unique: str, tmp_path: Path) -> AsyncIterator[Rig]:
    access_id = f"so{unique}"
    secret = secrets.token_hex(16)
    sim = SimProcess(stack, access_id, secret, tmp_path / "sim.log", **SIM_SETTINGS)
    services = (
        ingest_replicas(stack, access_id, secret, unique, tmp_path),
        status_replicas(stack, access_id, secret, sim, unique, tmp_path),
        pairing_replicas(stack, access_id, secret, sim, unique, tmp_path),
        ota_replicas(stack, access_id, secret, sim, unique, tmp_path),
    )
    # No span exporter: this test checks no traces (tests/e2e/traces does), exporting every span costs 2-3x
    # the CPU per message (README, "Traces") on a shared two-core machine, and would fill the shared viewer.
    for env in (sim.env, *(p.env for replicas in services for p in replicas.processes)):
        for variable in UNTRACED:
            env.pop(variable, None)
    client = pa.Client(stack.pulsar_url, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Warn))
    readers = [
        await reader.open(client, topic.name, f"e2e-so-{unique}", access_id)
        for reader, topic in (
            (TopicReader, topics.DEVICE_EVENTS),
            (ProducerReader, topics.STATUS_SHADOW_EVENTS),  # status's events: told from other runs'
            (ProducerReader, topics.STATUS_PRESENCE_EVENTS),
            (TopicReader, topics.PAIRING_EVENTS),
        )
    ]
    try:
        sim.start()
        await sim.wait_ready()  # it provisions Tuya's topic, so it goes first
        for replicas in services:
            replicas.start()
        await asyncio.gather(*(r.wait_ready() for r in services))
        yield Rig(stack, int(unique, 16) % 2**31, sim, *services, *readers, tmp_path)
    finally:
        for replicas in services:
            replicas.kill()
        sim.stop()
        for reader in readers:
            await reader.close()
        await client.close()
        for replicas in services:
            await asyncio.to_thread(
                drop_subscription, stack.pulsar_admin_url, replicas.topic, replicas.subscription
            )
        mongo: AsyncIOMotorClient[Any] = AsyncIOMotorClient(stack.mongodb_uri)
        try:
            for replicas in services:
                await mongo.drop_database(replicas.database)
        finally:
            mongo.close()


async def within(seconds: float, what: str, probe: Callable[[], Any]) -> Any:
    """Polls the blocking `probe` (in a thread) until it returns something truthy; fails with `what`. A probe
    whose request times out (a process or the broker's admin API slow on a loaded machine) is asked again."""
    deadline = time.monotonic() + seconds
    error: Exception | None = None
    while True:
        try:
            result = await asyncio.to_thread(probe)
        except (TimeoutError, OSError) as e:
            result, error = None, e
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting: {what} (last error: {error!r})"
        await asyncio.sleep(0.5)


def asking(what: str, ask: Callable[[], T]) -> T:
    """`ask()`, its timeout naming what did not answer (a failed wait then says which process or API)."""
    try:
        return ask()
    except TimeoutError as e:
        raise TimeoutError(f"{what} did not answer in time") from e


def both_at_work(rig: Rig) -> dict[str, Any] | None:
    """Each replica of each service has handled messages (its own metrics, the broker's stats), and ingest's
    partitions are split between its two replicas; None while not yet."""
    admin = rig.stack.pulsar_admin_url
    ingest = asking("ingest's /metrics", lambda: rig.ingest.metric("fleet_ingest_messages_received_total"))
    owners = asking("the broker's partition owners", lambda: rig.ingest.owners(admin))
    status = asking("status's /metrics", lambda: rig.status.metric("status_messages_total"))
    consumers = {
        r.name: asking(
            f"the broker's {r.name} consumers", lambda r=r: [handled(c) for c in r.consumers(admin)]
        )
        for r in rig.key_shared
    }
    ready = (
        min(ingest) > 0
        and len(owners) == 11
        and len({o for o in owners.values() if o}) == 2
        and min(status) > 0
        and all(len(h) == 2 and min(h) > 0 for h in consumers.values())
    )
    if not ready:
        return None
    split = sorted(list(owners.values()).count(name) for name in set(owners.values()))
    return {"ingest received": ingest, "partitions": split, "status merged": status, "handled": consumers}


def status_producers_of(rig: Rig) -> set[str]:
    """The producers of status's running replicas on its two topics."""
    admin, processes = rig.stack.pulsar_admin_url, rig.status.processes
    return producers_of(admin, topics.STATUS_SHADOW_EVENTS.name, processes) | producers_of(
        admin, topics.STATUS_PRESENCE_EVENTS.name, processes
    )


def consumer_names(replicas: Replicas, admin: str) -> set[str]:
    return {str(c["consumerName"]) for c in replicas.consumers(admin)}


async def test_two_replicas_of_each_consumer_share_the_load_and_a_sigkill_loses_nothing(rig: Rig) -> None:
    admin = rig.stack.pulsar_admin_url
    started = time.monotonic()
    async with (
        rig.sim.control() as ctl,
        api_client(rig.status.survivor, STATUS_API_KEY) as status_api,
        api_client(rig.pairing.survivor, rig.pairing.survivor.api_key or "") as pairing_api,
    ):
        # -- a fleet: bound devices that report, factory-fresh ones for pairing ------------------------------
        await call(
            ctl,
            "POST",
            "/sim/fleet",
            json={
                "seed": rig.seed,
                "devices": DEVICES,
                "homes": max(DEVICES // 10, 1),
                "unbound": SESSIONS,
                "online_ratio": 0.8,
            },
        )
        fleet = (await call(ctl, "GET", "/sim/truth", params={"messages": "false"}))["fleet"]
        bound = [d for d, t in fleet["devices"].items() if t["bound"]]
        fresh = [d for d, t in fleet["devices"].items() if not t["bound"]]
        assert len(fresh) == SESSIONS
        # the rollout's plugs: the bound ones, a few of them planned to fail at Tuya
        plugs = sorted(d for d in bound if fleet["devices"][d]["product_id"] == PLUG)
        failing = plugs[:3]
        assert len(plugs) > 2 * len(failing), f"only {len(plugs)} plugs in the fleet"
        # the sessions first: their tokens come from the simulated OpenAPI, which the stream below keeps busy
        planned = await open_sessions(pairing_api, fresh, fleet["homes"])
        offline = [d for d in bound if not fleet["devices"][d]["online"]]
        await each([call(ctl, "POST", f"/sim/devices/{d}/online") for d in offline])
        await call(ctl, "POST", "/sim/reports", json={"device_ids": bound, "max_dps": 3})
        await call(
            ctl,
            "POST",
            "/sim/scenario",
            json={"rate": RATE, "duration_s": SCENARIO_S, "churn_rate": 0.01, "max_dps": 3},
        )
        half = len(planned) // 2
        await activate(ctl, planned[:half])

        # -- both replicas of every service at work ----------------------------------------------------------
        at_work = await within(180, "both replicas of every service consuming", lambda: both_at_work(rig))

        # -- a firmware rollout to the plugs; the kill comes mid-wave ----------------------------------------
        await open_rollout(ctl, rig.ota.survivor, plugs, failing, OTA_PER_MINUTE)
        await within(
            60,
            "the rollout under way",
            lambda: commanded(rollout_totals(rollout_state(rig.ota.survivor))) >= 10,
        )

        # -- SIGKILL one replica of each, mid-stream: in a burst, with messages between receipt and ack ------
        burst = asyncio.ensure_future(
            call(ctl, "POST", "/sim/reports", json={"device_ids": bound, "max_dps": 3})
        )
        in_flight = await within(
            60,
            "the ingest replica to kill holding messages",
            lambda: rig.ingest.victim.metric("fleet_ingest_in_flight_messages"),
        )
        keyshared_at_kill = await asyncio.to_thread(
            lambda: {r.name: r.consumers(admin) for r in rig.key_shared}
        )
        status_producers = await asyncio.to_thread(status_producers_of, rig)  # the victim's, while it lives
        rollout_at_kill = rollout_totals(
            await within(30, "ota's release at the kill", lambda: rollout_state(rig.ota.survivor))
        )
        for replicas in rig.services:
            replicas.victim.kill()
        killed, killed_at = time.monotonic(), time.time()
        await burst
        published_at_kill = (await call(ctl, "GET", "/sim/truth", params={"messages": "false"}))["summary"][
            "published"
        ]
        await activate(ctl, planned[half:])  # these bindings reach only the survivors (until the restart)

        # the survivors take over: every partition, every key range
        survivor_partitions = await within(
            30,
            "the surviving ingest replica active on all 11 partitions",
            lambda: len(set(rig.ingest.owners(admin).values())) == 1,
        )
        for replicas in rig.key_shared:
            await within(
                30, f"{replicas.name}'s killed consumer gone", lambda r=replicas: len(r.consumers(admin)) == 1
            )
        failover_s = time.monotonic() - killed
        unacked_at_kill: dict[str, int] = {}
        for replicas in rig.key_shared:
            alive = await asyncio.to_thread(consumer_names, replicas, admin)
            gone = [c for c in keyshared_at_kill[replicas.name] if str(c["consumerName"]) not in alive]
            assert len(gone) == 1, (replicas.name, gone)
            unacked_at_kill[replicas.name] = int(gone[0].get("unackedMessages", 0))
        await asyncio.sleep(2)  # the survivors alone for a while

        # -- the killed ones come back and take a share again ------------------------------------------------
        for replicas in rig.services:
            replicas.victim.start()
        restarted_at = time.time()
        await asyncio.gather(*(r.victim.wait_ready(within=300) for r in rig.services))
        await within(
            30,
            "the restarted ingest replica active on some partitions",
            lambda: len({o for o in rig.ingest.owners(admin).values() if o}) == 2,
        )
        for replicas in rig.key_shared:
            await within(
                30, f"{replicas.name} back to two consumers", lambda r=replicas: len(r.consumers(admin)) == 2
            )
        await call(ctl, "POST", "/sim/reports", json={"device_ids": bound, "max_dps": 3})
        await call(ctl, "POST", "/sim/scenario/wait", params={"timeout": 120}, timeout=150)
        # the churn's last offline plugs come back, so every upgrade can finish (before the flush: its
        # progress pushes are part of the stream checked below)
        truth = (await call(ctl, "GET", "/sim/truth", params={"messages": "false"}))["fleet"]["devices"]
        # the plugs bound by the pairing sessions join the rollout (ota learns them from the device topic)
        paired = [p["device_id"] for p in planned if truth[p["device_id"]]["product_id"] == PLUG]
        targets = plugs + sorted(paired)
        await each([call(ctl, "POST", f"/sim/devices/{d}/online") for d in targets if not truth[d]["online"]])
        try:
            await within(240, "the rollout completed", lambda: rollout_completed(rig.ota.survivor))
        except AssertionError:
            state = await asyncio.to_thread(rollout_state, rig.ota.survivor)
            pytest.fail(f"the rollout did not complete in 240 s: {orjson.dumps(state).decode()[:3000]}")
        rollout_s = time.monotonic() - started
        flushed = await call(ctl, "POST", "/sim/flush", params={"timeout": 60}, timeout=90)
        assert flushed["flushed"]
        records = await published_messages(ctl)
        snapshot = await call(ctl, "GET", "/sim/truth", params={"messages": "false"})
        summary, devices = snapshot["summary"], snapshot["fleet"]["devices"]
        tokens = {t["token"]: t for t in snapshot["fleet"]["pairing_tokens"]}
        published_at = time.monotonic()

        # -- ingest: every fact once, in per-device order ----------------------------------------------------
        expect = expectation(records)
        assert len(records) > published_at_kill, "the stream went on after the kill"
        events = rig.device_events.messages
        try:
            await within(
                120,
                f"{len(expect.facts)} facts on the device topic",
                lambda: len({body["id"] for body, _ in events}) >= len(expect.facts),
            )
        except AssertionError:
            arrived = len({body["id"] for body, _ in events})
            backlog = await asyncio.to_thread(rig.ingest.backlog, admin)
            pytest.fail(
                f"{arrived} of {len(expect.facts)} facts on the device topic after 120 s; ingest's "
                f"backlog per partition {backlog}; ingest problems {ingest_problems(events, expect)[0][:3]}"
            )

        # -- status: the shadows equal the simulator's devices -----------------------------------------------
        want = expected_shadows(records, devices)
        reports = last_reports(records)
        for device, dps in reports.items():  # the simulator's final state is its last report (test's premise)
            assert dps == want[device].dps, (device, dps, want[device].dps)
        for device, shadow in want.items():  # and its presence is the last presence message's
            assert shadow.presence is None or shadow.presence[1] == devices[device]["online"], device
        deadline = time.monotonic() + 120
        while True:
            shadows = await all_shadows(status_api)
            problems = shadow_problems(shadows, want)
            if not problems or time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
        if problems:
            held = await asyncio.to_thread(rig.status.held, admin)
            pytest.fail(
                f"{len(problems)} of {len(want)} shadows differ from the simulator, e.g. {problems[:5]}; "
                f"status's subscription: {held}; logs:\n{rig.status.victim.log_tail(1500)}\n"
                f"{rig.status.survivor.log_tail(1500)}"
            )

        # -- pairing: every session's device, as Tuya says ---------------------------------------------------
        deadline = time.monotonic() + 60
        while True:
            views = await session_views(pairing_api, planned)
            pairing = pairing_problems(planned, views, tokens, rig.pairing_events.messages)
            if not pairing or time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
        converged = time.monotonic()
        await asyncio.sleep(3)  # anything extra (a late repeat) would show up now

    ingest, repeats = ingest_problems(events, expect)
    assert ingest == [], f"ingest: {ingest[:5]}"
    status_producers |= await asyncio.to_thread(status_producers_of, rig)  # the restarted victim's
    shadow_events, foreign = published_by(rig.shadow_events.messages, status_producers)
    presence_events, foreign_presence = published_by(rig.presence_events.messages, status_producers)
    assert shadow_events, f"no shadow events of status's producers {status_producers}"
    assert presence_events, f"no presence events of status's producers {status_producers}"
    chain = status_event_problems(shadow_events, presence_events, shadows, want)
    if chain:
        dump = rig.logs / "status-events.json"
        dump.write_bytes(
            orjson.dumps(
                {
                    "killed_at": killed_at,
                    "restarted_at": restarted_at,
                    "problems": chain[:50],
                    "status_producers": sorted(status_producers),
                    "shadow_events": [(body, props) for body, props in rig.shadow_events.messages],
                    "shadows": shadows,
                },
                option=orjson.OPT_INDENT_2,
            )
        )
        pytest.fail(f"status events: {len(chain)} problems, e.g. {chain[:5]} (all of them: {dump})")
    pairing = pairing_problems(planned, views, tokens, rig.pairing_events.messages)
    assert pairing == [], f"pairing: {pairing[:5]}"
    async with rig.sim.control() as ctl:
        commands = await call(ctl, "GET", "/sim/ota/commands")
    docs = await ota_documents(rig.stack.mongodb_uri, rig.ota.database)
    rollout = await within(30, "ota's release", lambda: rollout_state(rig.ota.survivor))  # relay settled
    firmware = {d: t["firmware"].get("0", "") for d, t in devices.items()}
    ota = ota_problems(rollout, docs, targets, failing, commands, firmware)
    if ota:
        dump = rig.logs / "ota.json"
        dump.write_bytes(orjson.dumps({"problems": ota, "docs": docs, "commands": commands}, default=str))
        pytest.fail(f"ota: {len(ota)} problems, e.g. {ota[:6]} (all of them and ota's documents: {dump})")

    # -- the load was shared, and the killed replicas had work in hand ---------------------------------------
    assert at_work["partitions"] == [5, 6], at_work  # 11 partitions over two Failover consumers
    assert in_flight > 0
    assert survivor_partitions
    assert unacked_at_kill["status"] > 0, "status acks after its history delay: the victim held messages"
    assert rollout_at_kill["pending"] > 0, f"the kill came after the wave: {rollout_at_kill}"
    for replicas in rig.services:
        for p in replicas.processes:
            assert p.proc is not None
            assert p.proc.poll() is None, f"{replicas.name} died:\n{p.log_tail()}"
    restarted = (
        rig.ingest.victim.metric("fleet_ingest_messages_received_total"),
        rig.status.victim.metric("status_messages_total"),
    )
    assert min(restarted) > 0, f"the restarted replicas consumed nothing: {restarted}"
    print(
        f"\n{DEVICES} devices, {len(records)} messages published ({summary['duplicates']} chaos duplicates), "
        f"{len(expect.facts)} facts -> {len(events)} device events ({repeats} repeats); "
        f"{len(shadow_events)} shadow and {len(presence_events)} presence events for {len(want)} shadows "
        f"(and {foreign + foreign_presence} about them from status processes outside this test); "
        f"{len(planned)} pairing sessions; a rollout to {len(targets)} plugs ({len(paired)} paired during "
        f"it, {len(failing)} planned to fail, "
        f"{sum('2001' in commands.get(d, {}).get('refused', {}) for d in targets)} refused as offline), "
        f"at the kill {dict(rollout_at_kill)}, completed after {rollout_s:.1f}s. Before the kill: {at_work}. "
        f"Killed with {in_flight:.0f} in flight at ingest, unacked {unacked_at_kill}; failover in "
        f"{failover_s:.1f}s; restarted replicas consumed {restarted}. Stream {published_at - started:.1f}s, "
        f"converged +{converged - published_at:.1f}s; load average {os.getloadavg()[0]:.1f}"
    )
