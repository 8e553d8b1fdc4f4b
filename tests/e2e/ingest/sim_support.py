"""The Tuya cloud simulator as the e2e tests run it: `python -m fleet_tuya_sim serve` as a process (settings
from `FLEET_SIM_*` as deployed), driven through its `/sim` control API, and its ground truth turned into what
ingest must have published: one event per fact (a message and its chaos duplicates), one dead letter per
malformed Pulsar message."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support import Stack, free_port, stop_process, wait_until_ready

#: The event ingest makes of each simulator message kind (bizCode, `statusReport`, malformed kind).
EVENT_TYPE_OF_KIND = {
    "statusReport": "device.status.reported.v1",
    "devicePropertyMessage": "device.status.reported.v1",
    "online": "device.online.v1",
    "deviceOnline": "device.online.v1",
    "offline": "device.offline.v1",
    "deviceOffline": "device.offline.v1",
    "bindUser": "device.bound.v1",
    "deviceBindSpace": "device.bound.v1",
    "delete": "device.removed.v1",
    "deviceUnbindSpace": "device.unbound.v1",
    "nameUpdate": "device.renamed.v1",
    "deviceNameUpdate": "device.renamed.v1",
    "dpNameUpdate": "device.dp.renamed.v1",
    "upgradeStatus": "device.ota.progressed.v1",
    "deviceOtaProgress": "device.ota.progressed.v1",
    "unknown_protocol": "device.tuya_message.unknown.v1",
}

#: Malformations ingest must dead-letter (the simulator's `unknown_protocol` becomes an "unknown" event).
DEAD_LETTER_KINDS = ["bad_base64", "bad_padding", "wrong_key", "truncated_tag", "non_json"]


class SimProcess:
    """The simulated Tuya cloud for one throwaway project, publishing to the test's Pulsar."""

    def __init__(
        self, stack: Stack, access_id: str, secret: str, log: Path, **settings: str | int | float
    ) -> None:
        self.port = free_port()
        self.log = log
        self.control_token = os.urandom(12).hex()
        self.env = {
            **os.environ,
            "FLEET_TUYA_ACCESS_ID": access_id,
            "FLEET_TUYA_ACCESS_SECRET": secret,
            "FLEET_PULSAR_URL": stack.pulsar_url,
            "FLEET_PULSAR_ADMIN_URL": stack.pulsar_admin_url,
            "FLEET_SIM_PROVISION": "true",  # Tuya's layout: tenant = access id, `out`, 11 partitions
            "FLEET_SIM_HOST": "127.0.0.1",
            "FLEET_SIM_PORT": str(self.port),
            "FLEET_SIM_CONTROL_TOKEN": self.control_token,
            "FLEET_SIM_LOG_LEVEL": "WARNING",
            **{f"FLEET_SIM_{name.upper()}": str(value) for name, value in settings.items()},
        }
        self.env.pop("FLEET_HTTP_PORT", None)  # the simulator would take it as its port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fleet_tuya_sim", "serve"], env=self.env, stdout=out, stderr=out
        )

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"{self.url}{path}", timeout=5) as r:  # noqa: S310 - local test server
                return int(r.status), r.read()
        except urllib.error.HTTPError as e:
            return int(e.code), e.read()

    async def wait_ready(self, within: float = 60.0) -> None:
        await wait_until_ready("tuya-sim", self.proc, self.log, self.get, within)

    def control(self, timeout: float = 60.0) -> httpx.AsyncClient:
        """A client of the `/sim` control API (bearer token). A new connection per request: uvicorn closes
        idle keep-alive connections after 5 s, and a request racing that close fails with a ReadError."""
        return httpx.AsyncClient(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self.control_token}"},
            timeout=timeout,
            limits=httpx.Limits(max_keepalive_connections=0),
        )

    def stop(self) -> None:
        stop_process(self.proc)


async def published_messages(control: httpx.AsyncClient, page: int = 20_000) -> list[dict[str, Any]]:
    """Every message of the ground truth, in publication order (`GET /sim/truth/messages`, paged)."""
    out: list[dict[str, Any]] = []
    while True:
        response = await control.get("/sim/truth/messages", params={"offset": len(out), "limit": page})
        response.raise_for_status()
        body = response.json()
        out += body["messages"]
        if len(out) >= body["total"] or not body["messages"]:
            return out


@dataclass
class Fact:
    """One thing the simulated cloud said: its original message and the chaos duplicates of it."""

    record: dict[str, Any]  # the original
    message_ids: set[str] = field(default_factory=set)  # Pulsar ids of every copy
    first_seq: int = (
        0  # publication position of the copy published first (shuffles may put a duplicate first)
    )

    @property
    def tid(self) -> str:
        return str(self.record["tid"])

    @property
    def device_id(self) -> str:
        return str(self.record["key"])


@dataclass
class Expectation:
    """What ingest must make of the published stream."""

    facts: dict[str, Fact]  # tid -> fact that must become exactly one event
    fact_of_message: dict[str, str]  # Pulsar message id -> tid
    dead_letters: dict[str, dict[str, Any]]  # Pulsar message id -> malformed record (each copy dead-lettered)
    duplicates: int  # copies of good messages: chaos twins and late re-pushes (ingest drops them)
    by_message: dict[str, dict[str, Any]]  # Pulsar message id -> its record

    def per_device(self) -> dict[str, list[str]]:
        """Device -> tids in the order the device's first copies were published (Pulsar keeps it per key),
        unknown-protocol messages included (their `devId` keys their events too)."""
        out: dict[str, list[Fact]] = defaultdict(list)
        for fact in self.facts.values():
            out[fact.device_id].append(fact)
        return {d: [f.tid for f in sorted(fs, key=lambda f: f.first_seq)] for d, fs in out.items()}


def expectation(records: list[dict[str, Any]]) -> Expectation:
    """Groups the ground truth: good messages by fact, malformed ones by Pulsar message."""
    for r in records:
        assert r["message_id"], f"the simulator did not publish {r['tid']}: {r['error']}"
        assert not r["error"], r["error"]
    facts: dict[str, Fact] = {}
    dead: dict[str, dict[str, Any]] = {}
    for r in records:
        if r["duplicate_of"] is None and r["expected"] in ("accept", "unknown_protocol"):
            facts[r["tid"]] = Fact(r, first_seq=r["seq"])
    fact_of_message: dict[str, str] = {}
    duplicates = 0
    for r in records:
        tid = r["duplicate_of"] or r["tid"]
        if tid in facts:
            fact = facts[tid]
            fact.message_ids.add(r["message_id"])
            fact.first_seq = min(fact.first_seq, r["seq"])
            fact_of_message[r["message_id"]] = tid
            duplicates += r["duplicate_of"] is not None
        else:
            dead[r["message_id"]] = r
    by_message = {r["message_id"]: r for r in records}
    return Expectation(facts, fact_of_message, dead, duplicates, by_message)


def event_matches(event: dict[str, Any], record: dict[str, Any]) -> str | None:
    """None if `event` says what the simulator's message said; else what differs."""
    kind, data, subject = record["kind"], record["data"] or {}, record["key"]
    expected_type = EVENT_TYPE_OF_KIND[record["malformed"] or kind]
    if event["type"] != expected_type:
        return f"type {event['type']} for {kind}"
    body = event["data"]
    if event["subject"] != subject:
        return f"subject {event['subject']} for {subject}"
    if record["malformed"]:  # an unknown protocol, whose `devId` at the top names the device
        return None if body["protocol"] == record["protocol"] else "protocol"
    if body["origin"]["protocol"] != record["protocol"]:
        return f"origin protocol {body['origin']['protocol']} for {record['protocol']}"
    biz = data.get("bizData", {})
    if expected_type == "device.status.reported.v1":
        items = data.get("status") or biz.get("properties") or []
        want = [(i["code"], i["value"], i.get("t", i.get("time"))) for i in items]
        got = [(d["code"], d["value"], d["device_time_ms"]) for d in body["dps"]]
        return None if got == want else f"dps {got} for {want}"
    if expected_type in ("device.online.v1", "device.offline.v1"):
        return None if body["device_time_ms"] == biz["time"] else "device time"
    if expected_type == "device.renamed.v1":
        return None if body["name"] == biz["name"] else "name"
    if expected_type == "device.dp.renamed.v1":
        return None if (body["dp_id"], body["name"]) == (biz["dpId"], biz["name"]) else "dp name"
    if expected_type == "device.bound.v1":
        home = biz.get("ownerId", biz.get("spaceId"))
        return None if (body["owner_uid"], body["home_id"]) == (biz["uid"], home) else "binding"
    if expected_type in ("device.unbound.v1", "device.removed.v1"):
        home = biz.get("ownerId", biz.get("spaceId"))
        return None if (body["owner_uid"], body["home_id"]) == (biz["uid"], home) else "former binding"
    if expected_type == "device.ota.progressed.v1":
        channel = biz.get("moduleType", biz.get("channel"))
        same = (body["upgrade_status"], body["channel"]) == (biz["upgradeStatus"], channel)
        if "progress" in biz:
            same = same and body["progress_percent"] == biz["progress"]
        return None if same else f"ota {body} for {biz}"
    return None
