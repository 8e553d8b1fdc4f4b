"""The scale-out rig and its checks: tuya-sim (Tuya's cloud: its topic has Tuya's 11 partitions) and TWO
replicas each of ingest (one Failover subscription over the partitions), status, pairing and ota (KeyShared
subscriptions on the device topic), as processes on the real Pulsar and MongoDB-wire server, and readers of
the topics they publish. The checks compare what the replicas made with the simulator's ground truth."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import secrets
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from motor.motor_asyncio import AsyncIOMotorClient

from fleet_contracts import topics
from tests.e2e.ingest.sim_support import Expectation, SimProcess
from tests.e2e.ingest.support import IngestProcess, TopicReader
from tests.e2e.ota.test_ota_e2e import counters, firmware_body, ota_process, recount
from tests.e2e.pairing.support import Pairing, each
from tests.support import (
    ServiceProcess,
    Stack,
    partition_owners,
    subscription_consumers,
    subscription_summary,
    topic_stats,
)

STATUS_API_KEY = secrets.token_urlsafe(24)


# --- the replicas -------------------------------------------------------------------------------------------


@dataclass
class Replicas:
    """Two processes of one service sharing its subscription and its database. The first is the one the test
    SIGKILLs (and may restart); the second survives."""

    name: str
    processes: tuple[ServiceProcess, ServiceProcess]
    topic: str  # the topic the service consumes
    subscription: str
    database: str

    @property
    def victim(self) -> ServiceProcess:
        return self.processes[0]

    @property
    def survivor(self) -> ServiceProcess:
        return self.processes[1]

    def start(self) -> None:
        for p in self.processes:
            p.start()

    async def wait_ready(self) -> None:
        await asyncio.gather(*(p.wait_ready(within=300) for p in self.processes))

    def kill(self) -> None:
        for p in self.processes:
            p.kill()

    def metric(self, name: str) -> tuple[float, float]:
        """A metric of each replica (victim, survivor)."""
        return self.processes[0].metric(name), self.processes[1].metric(name)

    def consumers(self, admin_url: str) -> list[dict[str, Any]]:
        """The broker's view of the KeyShared subscription: one entry per connected replica."""
        return subscription_consumers(admin_url, self.topic, self.subscription)

    def held(self, admin_url: str) -> dict[str, Any]:
        """The KeyShared subscription's backlog, unacked and held-back messages (for failure messages)."""
        return subscription_summary(admin_url, self.topic, self.subscription)

    def backlog(self, admin_url: str) -> dict[str, int]:
        """The Failover subscription's backlog per partition (for failure messages)."""
        stats = topic_stats(admin_url, self.topic, partitioned=True)
        out: dict[str, int] = {}
        for name, partition in stats.get("partitions", {}).items():
            sub = partition.get("subscriptions", {}).get(self.subscription) or {}
            out[name.rsplit("-", 1)[-1]] = int(sub.get("msgBacklog", -1))
        return out

    def owners(self, admin_url: str) -> dict[str, str | None]:
        """The broker's view of the Failover subscription: the active replica of each partition."""
        return partition_owners(admin_url, self.topic, self.subscription)


def handled(consumer: dict[str, Any]) -> int:
    """Messages the broker sent a consumer that it has acknowledged (sent minus still unacknowledged)."""
    return int(consumer.get("msgOutCounter", 0)) - int(consumer.get("unackedMessages", 0))


def ingest_replicas(stack: Stack, access_id: str, secret: str, unique: str, logs: Path) -> Replicas:
    database = f"ingest_so_{unique}"
    pair = (
        IngestProcess(stack, access_id, secret, database, logs / "ingest-a.log"),
        IngestProcess(stack, access_id, secret, database, logs / "ingest-b.log"),
    )
    return Replicas(
        "ingest", pair, topics.tuya_event_topic(access_id), topics.tuya_subscription(access_id), database
    )


def status_replicas(
    stack: Stack, access_id: str, secret: str, sim: SimProcess, unique: str, logs: Path
) -> Replicas:
    database, subscription = f"status_so_{unique}", f"status-so-{unique}"
    env = {
        "FLEET_TUYA_ACCESS_ID": access_id,
        "FLEET_TUYA_ACCESS_SECRET": secret,
        "FLEET_TUYA_OPENAPI_URL": sim.url,  # DP schemas from the simulated OpenAPI
        "FLEET_STATUS_DATABASE": database,
        "FLEET_STATUS_SUBSCRIPTION": subscription,
        "FLEET_STATUS_INITIAL_POSITION": "latest",
        # no reconciliation from the OpenAPI: every shadow value must come through the stream
        "FLEET_STATUS_RECONCILE_INTERVAL_S": "0",
    }
    pair = tuple(
        ServiceProcess("status", log=logs / f"status-{n}.log", stack=stack, api_key=STATUS_API_KEY, env=env)
        for n in "ab"
    )
    return Replicas("status", (pair[0], pair[1]), topics.DEVICE_EVENTS.name, subscription, database)


def pairing_replicas(
    stack: Stack, access_id: str, secret: str, sim: SimProcess, unique: str, logs: Path
) -> Replicas:
    # Polling Tuya's token result only every 5 minutes: a session's devices must come through the consumer.
    slow_poll = {"FLEET_PAIRING_POLL_INTERVAL_S": "300", "FLEET_PAIRING_SETTLE_S": "300"}
    a = Pairing(stack, sim, access_id, secret, unique, logs / "pairing-a.log", slow_poll)
    b = Pairing(stack, sim, access_id, secret, unique, logs / "pairing-b.log", slow_poll)
    return Replicas("pairing", (a, b), topics.DEVICE_EVENTS.name, f"pairing-e2e-{unique}", a.database)


def ota_replicas(
    stack: Stack, access_id: str, secret: str, sim: SimProcess, unique: str, logs: Path
) -> Replicas:
    """ota as the ota e2e runs it (one attempt per device, Tuya's upgrade API paced), twice on one
    database."""
    database = f"ota_so_{unique}"
    a = ota_process(stack, access_id, secret, sim, database, logs / "ota-a.log")
    b = ota_process(stack, access_id, secret, sim, database, logs / "ota-b.log")
    return Replicas("ota", (a, b), topics.DEVICE_EVENTS.name, f"ota-{database}", database)


# --- who published what ------------------------------------------------------------------------------------

#: set on what `ProducerReader` keeps: the Pulsar producer that published the message
PRODUCER = "x-test-producer"


class ProducerReader(TopicReader):
    """A `TopicReader` that also notes each message's producer. On a shared dev stack, status processes of
    other runs (and of branches without status's tenant filter) may publish events about this test's devices
    under its tenant; the producer tells this test's status replicas' events from theirs."""

    async def _run(self) -> None:
        while True:
            msg = await self.consumer.receive()
            body = orjson.loads(msg.data())
            if body.get("tenant") == self.tenant:
                self.messages.append((body, {**msg.properties(), PRODUCER: msg.producer_name()}))
            await self.consumer.acknowledge(msg)


def local_ports(pid: int) -> set[int]:
    """The local TCP ports of a process's sockets (Linux /proc): its connections to the broker."""
    inodes: set[str] = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[len("socket:[") : -1])
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                columns = line.split()
                if len(columns) > 9 and columns[9] in inodes:
                    ports.add(int(columns[1].rsplit(":", 1)[1], 16))
    return ports


def producers_of(admin_url: str, topic: str, processes: Iterable[ServiceProcess]) -> set[str]:
    """The names of the producers these (running) processes have on a topic: the broker lists each
    producer with its connection's address, matched here with the processes' own sockets."""
    ports: set[int] = set()
    for p in processes:
        if p.proc is not None and p.proc.poll() is None:
            ports |= local_ports(p.proc.pid)
    out: set[str] = set()
    for publisher in topic_stats(admin_url, topic).get("publishers", []):
        port = str(publisher.get("address", "")).rsplit(":", 1)[-1]
        if port.isdigit() and int(port) in ports:
            out.add(str(publisher["producerName"]))
    return out


def published_by(
    messages: list[tuple[dict[str, Any], dict[str, str]]], producers: set[str]
) -> tuple[list[dict[str, Any]], int]:
    """The bodies these producers published, in arrival order, and how many others there were."""
    ours = [body for body, props in messages if props.get(PRODUCER) in producers]
    return ours, len(messages) - len(ours)


# --- ground truth -------------------------------------------------------------------------------------------


@dataclass
class ExpectedShadow:
    """What a device's shadow must hold: its reported DPs as (device time, raw value), and its presence as
    (time of the last online/offline message, online)."""

    dps: dict[str, tuple[int, Any]] = field(default_factory=dict)
    presence: tuple[int, bool] | None = None


def expected_shadows(
    records: list[dict[str, Any]], devices: dict[str, dict[str, Any]]
) -> dict[str, ExpectedShadow]:
    """Per device with status or presence messages: every DP it reported, at the simulator's final value and
    time for it, and the last presence message (offline wins a tie of device times, as in status's merge)."""
    out: dict[str, ExpectedShadow] = {}
    for r in records:
        if r["duplicate_of"] is not None or r["expected"] != "accept":
            continue
        kind, data, device = r["kind"], r["data"] or {}, str(r["key"])
        if kind == "statusReport":
            truth = devices[device]["dps"]
            shadow = out.setdefault(device, ExpectedShadow())
            for item in data["status"]:
                final = truth[item["code"]]
                shadow.dps[item["code"]] = (final["t"], final["value"])
        elif kind in ("online", "offline"):
            shadow = out.setdefault(device, ExpectedShadow())
            at, online = int(data["bizData"]["time"]), kind == "online"
            if shadow.presence is None or (at, not online) > (shadow.presence[0], not shadow.presence[1]):
                shadow.presence = (at, online)
    return out


def last_reports(records: list[dict[str, Any]]) -> dict[str, dict[str, tuple[int, Any]]]:
    """Device -> code -> the (device time, value) of its latest report in the published stream."""
    out: dict[str, dict[str, tuple[int, Any]]] = defaultdict(dict)
    for r in records:
        if r["duplicate_of"] is None and r["kind"] == "statusReport" and r["expected"] == "accept":
            for item in r["data"]["status"]:
                seen = out[str(r["key"])].get(item["code"])
                if seen is None or item["t"] >= seen[0]:
                    out[str(r["key"])][item["code"]] = (item["t"], item["value"])
    return out


def shadow_problems(shadows: dict[str, dict[str, Any]], expected: dict[str, ExpectedShadow]) -> list[str]:
    """How the shadows served by status differ from the truth (empty when all match)."""
    problems: list[str] = []
    for device, want in expected.items():
        s = shadows.get(device)
        if s is None:
            problems.append(f"{device}: no shadow")
            continue
        got = {code: (dp["device_time_ms"], dp["raw"]) for code, dp in s["dps"].items()}
        if got != want.dps:
            problems.append(f"{device}: dps {got} != {want.dps}")
        presence = (s["presence"]["changed_at_ms"], s["presence"]["online"])
        if want.presence is not None and presence != want.presence:
            problems.append(f"{device}: presence {presence} != {want.presence}")
    return problems


async def all_shadows(api: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    """Every shadow of status's database, through the paginated list API."""
    out: dict[str, dict[str, Any]] = {}
    params = {"limit": "500"}
    while True:
        response = await api.get("/v1/devices", params=params)
        assert response.status_code == 200, response.text[:300]
        page = response.json()
        for item in page["items"]:
            out[item["device_id"]] = item
        if not page["next_cursor"]:
            return out
        params["cursor"] = page["next_cursor"]


# --- what the replicas published ----------------------------------------------------------------------------


def first_occurrences(events: Iterable[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """The events in arrival order without repeated ids, and the ids repeated with a different content (an
    event delivered again must be the same event)."""
    seen: dict[str, dict[str, Any]] = {}
    out: list[dict[str, Any]] = []
    conflicts: list[str] = []
    for e in events:
        first = seen.setdefault(e["id"], e)
        if first is e:
            out.append(e)
        elif first["data"] != e["data"]:
            conflicts.append(e["id"])
    return out, conflicts


def ingest_problems(
    events: list[tuple[dict[str, Any], dict[str, str]]], expect: Expectation
) -> tuple[list[str], int]:
    """Exactly once and in order: one event id per fact of the simulator and no other; each device's events,
    after dropping repeated ids, in the order the device's messages were published. Also returns how many
    repeats (the same event again: a redelivery after the kill) arrived."""
    problems: list[str] = []
    fact_of_event: dict[str, str] = {}
    first: dict[str, dict[str, Any]] = {}
    order: dict[str, list[str]] = defaultdict(list)
    repeats = 0
    for body, props in events:
        tid = expect.fact_of_message.get(props.get("tuya-message-id", ""))
        if tid is None:
            problems.append(f"an event from no published message: {body['id']}")
            continue
        if fact_of_event.setdefault(body["id"], tid) != tid:
            problems.append(f"event id {body['id']} for two facts")
            continue
        if body["id"] in first:
            repeats += 1
            if body != first[body["id"]]:
                problems.append(f"event {body['id']} again with another content")
            continue
        first[body["id"]] = body
        order[body["subject"]].append(tid)
    facts_with_events = set(fact_of_event.values())
    missing = set(expect.facts) - facts_with_events
    if missing:
        problems.append(f"{len(missing)} facts without an event, e.g. {sorted(missing)[:3]}")
    if len(fact_of_event) != len(facts_with_events):
        problems.append("a fact published under two event ids")
    wrong = [d for d, tids in expect.per_device().items() if order.get(d) != tids]
    if wrong:
        problems.append(f"{len(wrong)} devices' events out of publication order, e.g. {wrong[:3]}")
    return problems, repeats


def status_event_problems(
    shadow_events: list[dict[str, Any]],
    presence_events: list[dict[str, Any]],
    shadows: dict[str, dict[str, Any]],
    devices: Iterable[str],
) -> list[str]:
    """Per device, status's events (repeats dropped) in arrival order: shadow versions strictly increase;
    each DP change starts where the previous one of that DP ended (a lost event would break the chain), the
    last one is the shadow's value; presence changes alternate and the last one is the shadow's."""
    problems: list[str] = []
    changes, conflicts = first_occurrences(shadow_events)
    flips, presence_conflicts = first_occurrences(presence_events)
    if conflicts or presence_conflicts:
        problems.append(f"event ids reused with another content: {(conflicts + presence_conflicts)[:3]}")
    by_device: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in changes:
        by_device[e["data"]["device_id"]].append(e["data"])
    flips_by_device: dict[str, list[tuple[int, bool]]] = defaultdict(list)
    for e in flips:
        version = int(e["id"].rsplit(":", 1)[1])  # status:{device}:presence:{shadow version}
        flips_by_device[e["data"]["device_id"]].append((version, e["data"]["online"]))
    for device in devices:
        shadow = shadows.get(device)
        if shadow is None:
            continue
        versions = [c["shadow_version"] for c in by_device[device]]
        if versions != sorted(set(versions)):
            problems.append(f"{device}: shadow versions out of order {versions}")
        last: dict[str, dict[str, Any]] = {}
        for event in by_device[device]:
            for change in event["changes"]:
                if not chained(last.get(change["code"]), change["old"], change["new"]):
                    problems.append(f"{device}: {change} after {last.get(change['code'])}")
                last[change["code"]] = change["new"]
        values = {code: sample["value"] for code, sample in last.items()}
        if values != {code: dp["value"] for code, dp in shadow["dps"].items()}:
            problems.append(f"{device}: the changes end at {last}, the shadow holds {shadow['dps']}")
        presence = flips_by_device[device]
        if [v for v, _ in presence] != sorted({v for v, _ in presence}):
            problems.append(f"{device}: presence versions out of order {presence}")
        states = [online for _, online in presence]
        if any(a == b for a, b in itertools.pairwise(states)):
            problems.append(f"{device}: presence changes do not alternate {states}")
        if states and states[-1] != shadow["presence"]["online"]:
            problems.append(f"{device}: the last presence change {states[-1]} != {shadow['presence']}")
    return problems


def chained(last: dict[str, Any] | None, old: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    """A DP change follows the previous one of its DP: from its value (a report of the same value in between
    moves the time, and is no change), to a later device time."""
    if last is None:
        return old is None
    return (
        old is not None
        and old["value"] == last["value"]
        and old["device_time_ms"] >= last["device_time_ms"]
        and new["device_time_ms"] > old["device_time_ms"]
    )


def pairing_problems(
    planned: list[dict[str, Any]],
    views: dict[str, dict[str, Any]],
    tokens: dict[str, dict[str, Any]],
    events: list[tuple[dict[str, Any], dict[str, str]]],
) -> list[str]:
    """Every session's devices are Tuya's (the simulator's token result), it succeeded, and each fact has one
    event id."""
    problems: list[str] = []
    for p in planned:
        view = views.get(p["session_id"])
        if view is None:
            problems.append(f"{p['session_id']}: not found")
            continue
        paired = {d["device_id"] for d in view["devices"] if d["outcome"] == "paired"}
        success = {d["device_id"] for d in tokens[p["token"]]["success"]}
        if paired != success or paired != {p["device_id"]} or view["state"] != "succeeded":
            problems.append(f"{p['session_id']}: {view['state']} {sorted(paired)}, Tuya's {sorted(success)}")
    ids: dict[tuple[str, str, str | None], set[str]] = defaultdict(set)
    for body, _ in events:
        ids[(body["type"], body["data"]["token"], body["data"].get("device_id"))].add(body["id"])
    twice = [k for k, v in ids.items() if len(v) > 1]
    if twice:
        problems.append(f"facts published under two event ids: {twice[:3]}")
    for p in planned:
        if ("pairing.device.paired.v1", p["token"], p["device_id"]) not in ids:
            problems.append(f"{p['session_id']}: no paired event")
    return problems


# --- ota: a firmware rollout to the fleet's plugs -----------------------------------------------------------

PLUG = "sim0plug0cz00001"
PLUG_FIRMWARE = "1.3.0"
RELEASE = "plug-scaleout"


async def open_rollout(
    ctl: httpx.AsyncClient, ota: ServiceProcess, plugs: list[str], failing: list[str], per_minute: float
) -> None:
    """ota's inventory of the plugs, the new firmware at Tuya and at ota, `failing` planned to fail at Tuya,
    and a release to every region the plugs are in (no canary, no automatic halt: every plug is commanded)."""
    inventory = [d for d in await call(ctl, "GET", "/sim/ota/devices") if d["device_id"] in set(plugs)]
    devices = [
        {
            "device_id": d["device_id"],
            "product_id": d["product_id"],
            "region": d["region"],
            "activated_at": datetime.fromtimestamp(d["active_time"] or time.time(), UTC).isoformat(),
            "versions": d["firmware"],
        }
        for d in inventory
    ]
    status, body = await asyncio.to_thread(ota.post, "/v1/devices", {"devices": devices})
    assert status == 200, body
    await call(
        ctl, "POST", "/sim/firmware", json={"product_id": PLUG, "version": PLUG_FIRMWARE, "timeout_s": 60}
    )
    status, body = await asyncio.to_thread(ota.post, "/v1/firmware", firmware_body(PLUG, PLUG_FIRMWARE))
    assert status == 201, body
    for device in failing:
        await call(ctl, "POST", "/sim/ota/plan", json={"device_id": device, "outcome": "failure"})
    regions = sorted({d["region"] for d in inventory})
    release = {
        "release_id": RELEASE,
        "firmware_id": f"{PLUG}:0:{PLUG_FIRMWARE.rsplit('.', 1)[0]}",
        "regions": [{"region": r, "per_minute": per_minute, "jitter": 0.2} for r in regions],
    }
    status, body = await asyncio.to_thread(ota.post, "/v1/releases", release)
    assert status == 201, body


def rollout_state(ota: ServiceProcess) -> dict[str, Any] | None:
    """The release as ota reports it (None while the process does not answer)."""
    status, body = ota.get(f"/v1/releases/{RELEASE}")
    return dict(body) if status == 200 else None


def rollout_totals(release: dict[str, Any] | None) -> Counter[str]:
    """The release's counters summed over its regions and stages."""
    out: Counter[str] = Counter()
    for region in (release or {}).get("regions", []):
        for stage in region["stages"]:
            for key in ("targeted", "pending", "upgrading", "waiting", "succeeded", "failed", "cancelled"):
                out[key] += stage[key]
    return out


def commanded(totals: Counter[str]) -> int:
    """Plugs commanded so far (upgrading or settled)."""
    return totals["upgrading"] + totals["succeeded"] + totals["failed"]


def rollout_completed(ota: ServiceProcess) -> bool:
    release = rollout_state(ota)
    return release is not None and all(r["status"] == "completed" for r in release["regions"])


async def ota_documents(mongodb_uri: str, database: str) -> dict[str, list[dict[str, Any]]]:
    """ota's upgrade documents, plan chunks and walks, once no outbox is left to relay (the relay applies the
    counters)."""
    client: AsyncIOMotorClient[Any] = AsyncIOMotorClient(mongodb_uri)
    try:
        db = client[database]
        deadline = time.monotonic() + 30
        while True:
            found = {name: [d async for d in db[name].find({})] for name in ("upgrades", "plans", "sweeps")}
            pending = any(d.get("relay") for docs in found.values() for d in docs)
            if not pending or time.monotonic() > deadline:
                return found
            await asyncio.sleep(0.3)
    finally:
        client.close()


def ota_problems(
    release: dict[str, Any],
    docs: dict[str, list[dict[str, Any]]],
    plugs: list[str],
    failing: list[str],
    commands: dict[str, dict[str, Any]],
    firmware: dict[str, str],
) -> list[str]:
    """Every plug has one upgrade: failed if it was planned to fail, else succeeded on the new firmware (the
    simulator's device) or failed because Tuya refused its command as offline (2001: the scenario's presence
    churn took it offline just then; with one attempt per device that fails it); Tuya received exactly one
    command per recorded attempt (never twice for one); the release's counters equal a recount of ota's
    documents."""
    problems: list[str] = []
    upgrades = {d["device_id"]: d for d in docs["upgrades"] if d["release_id"] == RELEASE}
    if set(upgrades) != set(plugs):
        missing, extra = sorted(set(plugs) - set(upgrades)), sorted(set(upgrades) - set(plugs))
        planned = {i for chunk in docs["plans"] for i in chunk["devices"]}
        claimed = {i for walk in docs["sweeps"] for claim in walk["claims"] for i in claim["devices"]}
        seen = [(i in planned, i in claimed, firmware.get(i)) for i in missing[:3]]
        problems.append(
            f"upgrades for {len(upgrades)} of {len(plugs)} plugs; missing {missing[:3]} (in a plan chunk, in "
            f"a walk's claim, its firmware: {seen}); not plugs of the rollout {extra[:3]}"
        )
    for device, doc in upgrades.items():
        tally = commands.get(device, {"accepted": 0, "refused": {}})
        want = "failed" if device in failing or "2001" in tally["refused"] else "succeeded"
        if doc["state"] != want:
            problems.append(f"{device}: {doc['state']} ({doc.get('reason')}), not {want}")
        if want == "succeeded" and firmware.get(device) != PLUG_FIRMWARE:
            problems.append(f"{device}: succeeded, the simulator's device runs {firmware.get(device)}")
        sent = tally["accepted"] + sum(n for code, n in tally["refused"].items() if code != "1199")
        if sent != doc["attempt"]:
            problems.append(f"{device}: Tuya received {sent} commands for {doc['attempt']} attempts")
    succeeded = sum(d["state"] == "succeeded" for d in upgrades.values())
    if succeeded < len(plugs) // 2:
        problems.append(f"only {succeeded} of {len(plugs)} plugs succeeded")
    recounted = recount(docs["upgrades"], docs["plans"], docs["sweeps"], RELEASE)
    if counters(release) != recounted:
        problems.append(f"counters {counters(release)} != recount {recounted}")
    return problems


# --- driving the simulator and the APIs ---------------------------------------------------------------------


async def call(ctl: httpx.AsyncClient, method: str, path: str, **kw: Any) -> Any:
    response = await ctl.request(method, path, **kw)
    assert response.status_code == 200, f"{method} {path}: {response.status_code} {response.text[:300]}"
    return response.json()


def api_client(process: ServiceProcess, api_key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=process.url,
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=60,
        limits=httpx.Limits(max_keepalive_connections=0),
    )


async def open_sessions(
    api: httpx.AsyncClient, devices: list[str], homes: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """One EZ session per factory-fresh device, in the homes of the fleet's owners."""

    async def one(i: int, device: str) -> dict[str, Any]:
        home = homes[i % len(homes)]
        body = {
            "owner_uid": home["owner_uid"],
            "home_id": home["home_id"],
            "mode": "EZ",
            "time_zone_id": "Europe/Berlin",
            "idempotency_key": f"scaleout-{i}",
        }
        response = await api.post("/v1/pairing-sessions", json=body)
        assert response.status_code == 201, response.text[:300]
        answer = response.json()
        return {
            "session_id": answer["session"]["session_id"],
            "token": answer["session"]["token"],
            "assembled": answer["assembled_token"],
            "device_id": device,
        }

    return await each([one(i, d) for i, d in enumerate(devices)], limit=8)


async def activate(ctl: httpx.AsyncClient, planned: list[dict[str, Any]]) -> None:
    """Each session's device takes its token (Tuya pushes the binding with the token)."""
    results = await each(
        [
            call(
                ctl,
                "POST",
                "/sim/pairing/activate",
                json={"token": p["assembled"], "device_ids": [p["device_id"]]},
            )
            for p in planned
        ],
        limit=8,
    )
    assert all(o["ok"] for outcomes in results for o in outcomes), results


async def session_views(api: httpx.AsyncClient, planned: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    answers = await each([api.get(f"/v1/pairing-sessions/{p['session_id']}") for p in planned])
    return {p["session_id"]: r.json() for p, r in zip(planned, answers, strict=True) if r.status_code == 200}
