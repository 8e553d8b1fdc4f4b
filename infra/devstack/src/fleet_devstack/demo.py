"""`just demo`: the live fleet end to end: the Tuya cloud simulator's devices report, ingest turns the
encrypted push messages into device events, status keeps a shadow per device; the demo waits until status's
HTTP API serves exactly what the simulator says (its ground truth) and prints a few shadows. Then pairing
(a QR-mode session for a home of the fleet; a factory-fresh device joins the site's Wi-Fi from the QR
payload), unbinding (N strongly bound devices under a daily account limit of N-1: N-1 unbound, one refused
for quota) and OTA (a release over two regions; every upgrade in one fails, so that region halts while the
other completes).

Needs the stack with its services (`devstack up`). The simulator's control API (`/sim`) makes the fleet and
drives it; each service's API key is the one `devstack up` made for this stack (`services.api_key`). A
service's address is its dev port unless `FLEET_<SERVICE>_URL` says otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import secrets
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fleet_shared.service.registry import service

from .config import StackConfig
from .services import api_key

# Three mains-powered or waking products of the simulator's catalogue (plug, bulb, sensor).
DEMO_PRODUCTS = ("sim0plug0cz00001", "sim0bulb0dj00002", "sim0th00wsdcg003")
HTTP_TIMEOUT = 10.0


class DemoError(Exception):
    """Something did not come through; the message says what."""


class Api:
    """A JSON HTTP client of one local service (urllib: no connection kept between calls)."""

    def __init__(self, name: str, base_url: str, token: str | None = None) -> None:
        self.name = name
        self.base_url = base_url
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        missing_ok: bool = False,
    ) -> Any:
        url = f"{self.base_url}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        data = None if body is None else json.dumps(body).encode()
        headers = {**self.headers, **({"Content-Type": "application/json"} if data is not None else {})}
        request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310 - loopback
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:  # noqa: S310 - loopback
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as err:
            if err.code == 404 and missing_ok:
                return None
            detail = err.read().decode(errors="replace")[:300]
            if err.code == 401 and self.name != "tuya-sim":
                detail += " (started before this stack had an API key? restart: `just down && just up`)"
            raise DemoError(f"{self.name}: {method} {path} answered {err.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as err:
            raise DemoError(
                f"{self.name} at {self.base_url} is not reachable ({err}); is the stack up (`just up`)?"
            ) from None

    def get(self, path: str, params: Mapping[str, str] | None = None, missing_ok: bool = False) -> Any:
        return self.call("GET", path, params=params, missing_ok=missing_ok)

    def put(self, path: str, body: Any) -> Any:
        return self.call("PUT", path, body)

    def post(self, path: str, body: Any = None, params: Mapping[str, str] | None = None) -> Any:
        return self.call("POST", path, body if body is not None else {}, params)


# -- what the shadows must be ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DpSpec:
    code: str
    type: str
    unit: str = ""


@dataclass
class Expected:
    """One device as the simulator knows it, limited to what it told the cloud (reported DPs)."""

    device_id: str
    product_id: str
    online: bool
    dps: dict[str, tuple[Any, int]] = field(default_factory=dict)  # code -> (raw value, device time ms)


def product_specs(products: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, DpSpec]]:
    """Product id -> DP code -> type and unit, from the simulator's catalogue (`GET /sim/products`)."""
    out: dict[str, dict[str, DpSpec]] = {}
    for product in products:
        specs: dict[str, DpSpec] = {}
        for dp in product["dps"]:
            values = json.loads(dp.get("values") or "{}")
            unit = values.get("unit", "") if isinstance(values, dict) else ""
            specs[dp["code"]] = DpSpec(dp["code"], dp["type"], str(unit or ""))
        out[product["product_id"]] = specs
    return out


def expected_shadows(truth: Mapping[str, Any], before: Mapping[str, Any]) -> dict[str, Expected]:
    """The devices of the truth (`GET /sim/truth` `fleet.devices`), with the DPs whose device time moved
    since `before` (the same devices right after the fleet was made: initial values nobody reported)."""
    out: dict[str, Expected] = {}
    for device_id, device in truth.items():
        initial = before.get(device_id, {}).get("dps", {})
        expected = Expected(device_id, device["product_id"], bool(device["online"]))
        for code, dp in device["dps"].items():
            if code not in initial or dp["t"] != initial[code]["t"]:
                expected.dps[code] = (dp["value"], int(dp["t"]))
        out[device_id] = expected
    return out


def mismatches(shadows: Mapping[str, Mapping[str, Any]], expected: Mapping[str, Expected]) -> list[str]:
    """What status's shadows (`GET /v1/devices` items by device id) get wrong; empty when all match."""
    problems: list[str] = []
    for device_id, want in sorted(expected.items()):
        shadow = shadows.get(device_id)
        if shadow is None:
            problems.append(f"{device_id}: no shadow yet")
            continue
        if shadow.get("product_id") != want.product_id:
            problems.append(f"{device_id}: product {shadow.get('product_id')} != {want.product_id}")
        online = (shadow.get("presence") or {}).get("online")
        if online is not want.online:
            problems.append(f"{device_id}: online {online} != {want.online}")
        dps = shadow.get("dps") or {}
        for code, (raw, t) in sorted(want.dps.items()):
            got = dps.get(code)
            if got is None:
                problems.append(f"{device_id}: {code} missing")
                continue
            got_raw = got["raw"] if got.get("raw") is not None else got.get("value")
            if (got_raw, got["device_time_ms"]) != (raw, t):
                problems.append(f"{device_id}: {code}={got_raw!r}@{got['device_time_ms']} != {raw!r}@{t}")
    return problems


# -- the table -------------------------------------------------------------------------------------------


def format_value(value: Any, spec: DpSpec | None) -> str:
    """A typed DP value for people: booleans on/off, lists joined, numbers with their unit."""
    if isinstance(value, bool):
        text = "on" if value else "off"
    elif value is None:
        text = "-"
    elif isinstance(value, list):
        text = "[" + ",".join(str(v) for v in value) + "]"
    elif isinstance(value, float):
        text = f"{value:g}"
    else:
        text = str(value)
        if len(text) > 16:
            text = text[:15] + "…"
    unit = (
        spec.unit
        if spec is not None and isinstance(value, int | float) and not isinstance(value, bool)
        else ""
    )
    return f"{text} {unit}" if unit else text


def shadow_rows(
    shadows: Sequence[Mapping[str, Any]],
    specs: Mapping[str, Mapping[str, DpSpec]],
    product_names: Mapping[str, str],
) -> list[tuple[str, str, str, str]]:
    """(device, product, online, DPs) per shadow, DPs as `code=value unit` in code order."""
    rows = []
    for shadow in shadows:
        product_id = str(shadow.get("product_id") or "?")
        product_specs_ = specs.get(product_id, {})
        online = (shadow.get("presence") or {}).get("online")
        dps = shadow.get("dps") or {}
        values = ", ".join(
            f"{code}={format_value(dp.get('value'), product_specs_.get(code))}"
            for code, dp in sorted(dps.items())
        )
        rows.append(
            (
                str(shadow["device_id"]),
                product_names.get(product_id, product_id),
                {True: "online", False: "offline"}.get(online, "?") if online is not None else "?",
                values or "-",
            )
        )
    return rows


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    # the last column is not padded (it is the long one)
    widths[-1] = 0

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return "\n".join(
        [line(headers), line(["-" * max(w, len(h)) for w, h in zip(widths, headers, strict=True)])]
        + [line(r) for r in rows]
    )


# -- the run ---------------------------------------------------------------------------------------------


@dataclass
class DemoOptions:
    devices: int = 20
    homes: int = 4
    report_seconds: float = 4.0
    offline: int = 3
    show: int = 6
    timeout: float = 120.0
    seed: int | None = None
    unbind_devices: int = 5
    ota_devices: int = 12


def list_shadows(status: Api, product_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Every shadow of these products through `GET /v1/devices` (paginated)."""
    out: dict[str, dict[str, Any]] = {}
    for product_id in product_ids:
        params = {"product_id": product_id, "limit": "500"}
        while True:
            page = status.get("/v1/devices", params)
            for item in page["items"]:
                out[item["device_id"]] = item
            if not page.get("next_cursor"):
                break
            params = {**params, "cursor": page["next_cursor"]}
    return out


STATUS_TOPIC = "persistent://fleet/device/events"
STATUS_SUBSCRIPTION = "status"


def backlog_hint(pulsar_admin: Api | None, ours: int) -> str:
    """Why status may be late: more device events queued for its subscription than the demo's `ours`
    (earlier runs' or a benchmark's)."""
    if pulsar_admin is None:
        return ""
    path = "/admin/v2/" + STATUS_TOPIC.replace("://", "/") + "/stats"
    try:
        backlog = int(pulsar_admin.get(path)["subscriptions"][STATUS_SUBSCRIPTION]["msgBacklog"])
    except (DemoError, KeyError, TypeError, ValueError):
        return ""
    if backlog <= ours:
        return ""
    return (
        f"\nstatus's subscription has {backlog} device events queued, more than the demo's (earlier runs "
        f"or benchmarks on this stack); wait for it, or drop them: curl -X POST "
        f"{pulsar_admin.base_url}{path.removesuffix('/stats')}/subscription/{STATUS_SUBSCRIPTION}/skip_all"
    )


def run(
    sim: Api, status: Api, options: DemoOptions, say: Any = print, pulsar_admin: Api | None = None
) -> int:
    began = time.monotonic()
    status.get("/v1/devices", {"limit": "1"})  # the API key works before anything is made
    catalogue = sim.get("/sim/products")
    specs = product_specs(catalogue)
    names = {p["product_id"]: p["name"] for p in catalogue}
    seed = options.seed if options.seed is not None else random.randrange(1, 2**31)

    fleet = sim.post(
        "/sim/fleet",
        {
            "seed": seed,
            "devices": options.devices,
            "homes": options.homes,
            "product_ids": list(DEMO_PRODUCTS),
            "online_ratio": 0.0,
        },
    )
    device_ids: list[str] = fleet["bound_device_ids"]
    before = sim.get("/sim/truth", {"messages": "false"})["fleet"]["devices"]
    say(
        f"simulator: fleet of {len(device_ids)} devices over {len(fleet['products'])} products "
        f"({', '.join(names.get(p, p) for p in fleet['products'])}), seed {seed}"
    )

    for device_id in device_ids:
        sim.post(f"/sim/devices/{device_id}/online")
    reports_began = time.monotonic()
    rounds = 0
    while time.monotonic() - reports_began < options.report_seconds:
        sim.post("/sim/reports", {"device_ids": device_ids, "max_dps": 3})
        rounds += 1
        time.sleep(0.5)
    for device_id in device_ids[: options.offline]:
        sim.post(f"/sim/devices/{device_id}/offline")
    flushed = sim.post("/sim/flush", params={"timeout": "30"})
    summary = flushed["summary"]
    if not flushed["flushed"] or summary["failed"]:
        raise DemoError(f"the simulator did not publish everything: {summary}")
    published_at = time.monotonic()
    say(
        f"simulator: {rounds} report rounds in {published_at - reports_began:.1f}s, "
        f"{summary['published']} push messages published (all confirmed by Pulsar: {summary['confirmed']})"
    )

    truth = sim.get("/sim/truth", {"messages": "false"})["fleet"]["devices"]
    expected = expected_shadows(truth, before)
    deadline = time.monotonic() + options.timeout
    problems = ["not checked yet"]
    shadows: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        shadows = list_shadows(status, DEMO_PRODUCTS)
        problems = mismatches(shadows, expected)
        if not problems:
            break
        time.sleep(0.5)
    if problems:
        raise DemoError(
            f"status's shadows did not match the simulator's ground truth within {options.timeout:.0f}s: "
            f"{len(problems)} differences, e.g.\n  "
            + "\n  ".join(problems[:5])
            + backlog_hint(pulsar_admin, summary["published"])
        )
    converged = time.monotonic() - published_at

    ours = [shadows[d] for d in device_ids]
    online = sum(1 for e in expected.values() if e.online)
    dp_values = sum(len(e.dps) for e in expected.values())
    say(
        f"status: {len(ours)} shadows match the ground truth ({online} online, {len(ours) - online} offline, "
        f"{dp_values} DP values) {converged:.1f}s after the last message was published"
    )
    say("")
    # a few of each product, offline ones included
    shown = sorted(ours, key=lambda s: (str(s.get("product_id")), s["device_id"]))
    picks = [s for i, s in enumerate(shown) if i % max(1, len(shown) // options.show) == 0][: options.show]
    say(
        format_table(
            ("device", "product", "state", "DPs (typed, with units)"), shadow_rows(picks, specs, names)
        )
    )
    say("")
    say(
        f"total {time.monotonic() - began:.1f}s; more: GET {status.base_url}/v1/devices/<id>/shadow, "
        f"{status.base_url}/docs, {sim.base_url}/docs"
    )
    say(
        "reading this stream with Tuya's tuya-connector-python (TuyaOpenPulsar)? it decrypts AES-ECB only: "
        "pick ECB for the project (tuya-sim: FLEET_SIM_ENCRYPTION=aes_ecb; Tuya's console: Message Service)"
    )
    return 0


# -- pairing and unbinding -------------------------------------------------------------------------------

# mains-powered products (no sleepy sensor): pairing and unbinding want devices that answer at once
LIFECYCLE_PRODUCTS = DEMO_PRODUCTS[:2]
STACK_ACCOUNT = "devstack"  # the stack's API key's name: the unbinding account of the demo
DEMO_SSID = "demo-site"
FINAL_SESSION_STATES = frozenset({"succeeded", "partially_succeeded", "failed", "expired", "cancelled"})


@dataclass(frozen=True)
class PairingPick:
    owner_uid: str
    home_id: str
    device_id: str  # factory-fresh: no owner yet


def pick_for_pairing(fleet: Mapping[str, Any]) -> PairingPick:
    """The first home of the simulator's fleet (`/sim/truth` `fleet`) and a device nobody owns."""
    homes = fleet.get("homes") or []
    free = sorted(d for d, t in (fleet.get("devices") or {}).items() if not t.get("bound"))
    if not homes or not free:
        raise DemoError(
            f"the simulator's fleet has {len(homes)} homes and {len(free)} free devices; need both"
        )
    return PairingPick(str(homes[0]["owner_uid"]), str(homes[0]["home_id"]), free[0])


def seconds_between(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def pairing_rows(session: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    """(session, device, outcome, seconds from the token's issue) per device of a session view."""
    rows = []
    for device in session.get("devices") or []:
        outcome = str(device["outcome"])
        failure = device.get("failure")
        if failure:
            outcome += f" ({failure['cause']}, Tuya {failure['code']})"
        took = seconds_between(session["issued_at"], device["at"])
        rows.append(
            (
                str(session["session_id"]),
                str(device.get("device_id") or device["key"]),
                outcome,
                f"{took:.1f}s",
            )
        )
    return rows


def pairing_problems(session: Mapping[str, Any], device_id: str) -> list[str]:
    """What keeps the session from being the demo's success: succeeded, with exactly this device paired."""
    problems = []
    if session.get("state") != "succeeded":
        problems.append(f"session state {session.get('state')} != succeeded")
    paired = [d.get("device_id") for d in session.get("devices") or [] if d["outcome"] == "paired"]
    if paired != [device_id]:
        problems.append(f"paired {paired} != [{device_id}]")
    return problems


def run_pairing(sim: Api, pairing: Api, fleet: Mapping[str, Any], timeout: float, say: Any = print) -> None:
    pick = pick_for_pairing(fleet)
    # a fresh password per run; it travels in the QR payload only (never printed, never stored)
    password = secrets.token_urlsafe(12)
    sim.put("/sim/pairing/networks", {"networks": {DEMO_SSID: password}})
    opened = pairing.post(
        "/v1/pairing-sessions",
        {
            "owner_uid": pick.owner_uid,
            "home_id": pick.home_id,
            "mode": "QR",
            "time_zone_id": "Etc/UTC",
            "wifi": {"ssid": DEMO_SSID, "password": password},
            "idempotency_key": f"demo-{secrets.token_hex(8)}",
        },
    )
    session_id = opened["session"]["session_id"]
    qr = opened.get("qr") or {}
    say(
        f"pairing: QR session {session_id} for home {pick.home_id} of {pick.owner_uid} "
        f"(QR image: {len(qr.get('svg', ''))} chars of SVG, shown once)"
    )
    sim.post("/sim/pairing/provision", {"qr_payload": qr["payload"], "device_ids": [pick.device_id]})
    deadline = time.monotonic() + timeout
    while True:
        session = pairing.get(f"/v1/pairing-sessions/{session_id}")
        if session["state"] in FINAL_SESSION_STATES or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    problems = pairing_problems(session, pick.device_id)
    if problems:
        raise DemoError(f"pairing session {session_id}: " + "; ".join(problems))
    say(f"pairing: device {pick.device_id} joined {DEMO_SSID} and paired; the session succeeded")
    say("")
    say(format_table(("session", "device", "outcome", "time"), pairing_rows(session)))
    say("")


def ensure_registered(unbinding: Api, product_id: str) -> None:
    """The product is the stack account's (registered once; a later run finds it so)."""
    current = unbinding.get(f"/v1/products/{product_id}/authorizations", missing_ok=True)
    owner = (current or {}).get("owner")
    if owner is None:
        unbinding.post(f"/v1/products/{product_id}/authorizations/register", {"owner": STACK_ACCOUNT})
    elif owner != STACK_ACCOUNT:
        raise DemoError(f"unbinding: product {product_id} is registered to {owner}, not {STACK_ACCOUNT}")


def demo_limit(used_today: int, devices: int) -> int:
    """The account's daily limit that leaves room for all but one of `devices` (earlier runs count)."""
    return used_today + devices - 1


def unbinding_rows(
    results: Sequence[Mapping[str, Any]], product_names: Mapping[str, str]
) -> list[tuple[str, str, str, str]]:
    """(device, product, result, cause) per result record, in device order."""
    return [
        (
            str(r["device_id"]),
            product_names.get(str(r.get("product_id")), str(r.get("product_id") or "?")),
            str(r["result"]),
            str(r.get("cause") or r.get("detail") or "-") if r["result"] != "unbound" else "-",
        )
        for r in sorted(results, key=lambda r: str(r["device_id"]))
    ]


def unbinding_problems(results: Sequence[Mapping[str, Any]], devices: int) -> list[str]:
    """The demo's expectation: devices-1 unbound and one refused for quota, nothing else."""
    unbound = [r for r in results if r["result"] == "unbound"]
    quota = [r for r in results if r["result"] == "refused" and r.get("cause") == "quota_exceeded"]
    problems = []
    if len(results) != devices:
        problems.append(f"{len(results)} results for {devices} devices")
    if len(unbound) != devices - 1:
        problems.append(f"{len(unbound)} unbound, not {devices - 1}")
    if len(quota) != 1:
        problems.append(f"{len(quota)} refused for quota, not 1")
    others = [r for r in results if r not in unbound and r not in quota]
    for r in others:
        detail = f": {r['detail']}" if r.get("detail") else ""
        problems.append(f"{r['device_id']}: {r['result']} ({r.get('cause') or '-'}{detail})")
    return problems


def run_unbinding(
    unbinding: Api,
    fleet: Mapping[str, Any],
    devices: int,
    timeout: float,
    product_names: Mapping[str, str],
    say: Any = print,
) -> None:
    bound = sorted(d for d, t in fleet["devices"].items() if t.get("bound"))[:devices]
    if len(bound) < devices:
        raise DemoError(f"the simulator's fleet has {len(bound)} bound devices, the demo unbinds {devices}")
    # the limits the demo lowers or raises go back afterwards: the stack's account keeps working for
    # `fleet unbind` (a limit is kept until an administrator changes it, not just for today)
    restore: dict[str, int] = {}
    try:
        for product_id in LIFECYCLE_PRODUCTS:
            ensure_registered(unbinding, product_id)
            path = f"/v1/quotas/product/{product_id}"
            quota = unbinding.get(path)
            if quota["remaining"] < devices:  # earlier runs today: the product's limit is not the point here
                restore[path] = quota["limit"]
                unbinding.put(path, {"limit": quota["used"] + devices, "reason": "just demo"})
        path = f"/v1/quotas/account/{STACK_ACCOUNT}"
        quota = unbinding.get(path)
        restore[path] = quota["limit"]
        limit = demo_limit(quota["used"], devices)
        unbinding.put(path, {"limit": limit, "reason": "just demo"})
        say(
            f"unbinding: products registered to {STACK_ACCOUNT}; its daily limit set to {limit} "
            f"({quota['used']} used today): room for {devices - 1} of {devices}"
        )
        batch_id, results = unbind_batch(unbinding, bound, timeout)
    finally:
        restore_limits(unbinding, restore, say)
    problems = unbinding_problems(results, devices)
    if problems:
        raise DemoError(f"unbinding: batch {batch_id}: " + "; ".join(problems))
    say(f"unbinding: batch {batch_id} finished: {devices - 1} unbound, 1 refused (quota_exceeded)")
    say("")
    say(format_table(("device", "product", "result", "cause"), unbinding_rows(results, product_names)))
    say("")


def unbind_batch(unbinding: Api, device_ids: Sequence[str], timeout: float) -> tuple[str, list[Any]]:
    """Submit one list batch, wait until it finished; its id and result records."""
    batch = unbinding.post("/v1/batches", {"device_ids": list(device_ids), "reason": "just demo"})
    batch_id = str(batch["batch_id"])
    deadline = time.monotonic() + timeout
    while batch["status"] != "finished" and time.monotonic() < deadline:
        time.sleep(0.5)
        batch = unbinding.get(f"/v1/batches/{batch_id}")
    if batch["status"] != "finished":
        raise DemoError(f"unbinding: batch {batch_id} not finished within {timeout:.0f}s: {batch}")
    return batch_id, list(unbinding.get(f"/v1/batches/{batch_id}/results"))


def restore_limits(unbinding: Api, limits: Mapping[str, int], say: Any = print) -> None:
    for path, limit in limits.items():
        try:
            unbinding.put(path, {"limit": limit, "reason": "just demo: limit restored"})
        except DemoError as err:  # the demo's own outcome matters more; say what to do by hand
            say(f"unbinding: could not restore {path} to {limit}: {err}")
    if limits:
        restored = ", ".join(f"{path.removeprefix('/v1/quotas/')} {limit}" for path, limit in limits.items())
        say(f"unbinding: limits restored ({restored})")


def make_lifecycle_fleet(sim: Api, seed: int, devices: int) -> dict[str, Any]:
    """A new fleet for pairing and unbinding: strongly bound devices and two factory-fresh ones, online."""
    sim.post(
        "/sim/fleet",
        {
            "seed": seed,
            "devices": devices,
            "homes": 2,
            "unbound": 2,
            "product_ids": list(LIFECYCLE_PRODUCTS),
            "binding_mode": "strong",
            "online_ratio": 1.0,
        },
    )
    return sim.get("/sim/truth", {"messages": "false"})["fleet"]  # type: ignore[no-any-return]


# -- OTA ---------------------------------------------------------------------------------------------------

OTA_PRODUCT = DEMO_PRODUCTS[0]  # the plug: mains-powered, upgrades at once
OTA_REGIONS = ("eu", "us")
OTA_FAILING_REGION = "eu"
OTA_VERSION = "1.3.0"
OTA_WANT = {"eu": "halted", "us": "completed"}
FINAL_REGION_STATES = frozenset({"halted", "completed", "stopped"})


def firmware_entry(product_id: str, version: str) -> dict[str, Any]:
    """A firmware build as the catalogue takes it (module channel, silent upgrade); the demo's own URL."""
    return {
        "product_id": product_id,
        "channel": 0,
        "version": version,
        "size_bytes": 524288,
        "md5": hashlib.md5(f"{product_id}-{version}".encode()).hexdigest(),  # noqa: S324 - a checksum
        "signature": f"hmac-sha256:demo-{version}",
        "url": f"https://firmware.example/{product_id}/{version}.bin",
        "upgrade_type": 1,
        "packet_timeout_s": 60,
    }


def ota_inventory(devices: Sequence[Mapping[str, Any]], now: datetime) -> list[dict[str, Any]]:
    """The simulator's device list (`GET /sim/ota/devices`) as ota's device directory takes it."""
    return [
        {
            "device_id": d["device_id"],
            "product_id": d["product_id"],
            "region": d["region"],
            "activated_at": (
                datetime.fromtimestamp(d["active_time"], UTC) if d.get("active_time") else now
            ).isoformat(),
            "versions": d["firmware"],
        }
        for d in devices
    ]


def region_statuses(release: Mapping[str, Any]) -> dict[str, str]:
    return {str(r["region"]): str(r["status"]) for r in release["regions"]}


def ota_settled(release: Mapping[str, Any], want: Mapping[str, str]) -> bool:
    """Every region is in a final state (the demo's wish or another: then it says which)."""
    statuses = region_statuses(release)
    return all(statuses.get(region) in FINAL_REGION_STATES for region in want)


def ota_problems(release: Mapping[str, Any], want: Mapping[str, str]) -> list[str]:
    statuses = region_statuses(release)
    return [
        f"region {region} is {statuses.get(region, 'missing')}, not {status}"
        for region, status in sorted(want.items())
        if statuses.get(region) != status
    ]


def ota_rows(release: Mapping[str, Any]) -> list[tuple[str, ...]]:
    """(region, status, stage, targeted, succeeded, failed, open) per region and stage."""
    rows: list[tuple[str, ...]] = []
    for region in release["regions"]:
        for stage in region["stages"] or [{"stage": region.get("stage") or "-"}]:
            open_ = sum(int(stage.get(k, 0)) for k in ("pending", "upgrading", "waiting"))
            rows.append(
                (
                    str(region["region"]),
                    str(region["status"]),
                    str(stage["stage"]),
                    str(stage.get("targeted", 0)),
                    str(stage.get("succeeded", 0)),
                    str(stage.get("failed", 0)),
                    str(open_),
                )
            )
    return rows


def run_ota(sim: Api, ota: Api, seed: int, devices: int, timeout: float, say: Any = print) -> None:
    sim.post(
        "/sim/fleet",
        {
            "seed": seed,
            "devices": devices,
            "homes": 2,
            "regions": list(OTA_REGIONS),
            "product_ids": [OTA_PRODUCT],
            "online_ratio": 1.0,
        },
    )
    inventory = ota_inventory(sim.get("/sim/ota/devices"), datetime.now(UTC))
    ota.post("/v1/devices", {"devices": inventory})
    sim.post("/sim/firmware", {"product_id": OTA_PRODUCT, "version": OTA_VERSION, "timeout_s": 60})
    firmware = ota.post("/v1/firmware", firmware_entry(OTA_PRODUCT, OTA_VERSION))
    # every upgrade in the failing region fails (Tuya's answer, simulated)
    sim.put(
        "/sim/ota/faults",
        {"rules": [{"region": OTA_FAILING_REGION, "product_id": OTA_PRODUCT, "failure": 1.0}]},
    )
    release_id = f"demo-{seed}"
    plan = {"per_minute": 600.0, "halt_at": {"rate": 0.5, "min_sample": 2}}
    ota.post(
        "/v1/releases",
        {
            "release_id": release_id,
            "firmware_id": firmware["firmware_id"],
            "regions": [{"region": r, **plan} for r in OTA_REGIONS],
        },
    )
    say(
        f"ota: {len(inventory)} plugs in {', '.join(OTA_REGIONS)}; firmware {firmware['firmware_id']} "
        f"released as {release_id}; every upgrade in {OTA_FAILING_REGION} fails (simulator)"
    )
    deadline = time.monotonic() + timeout
    seen: dict[str, str] = {}
    try:
        while True:
            release = ota.get(f"/v1/releases/{release_id}")
            statuses = region_statuses(release)
            if statuses != seen:
                seen = statuses
                say("ota: " + ", ".join(f"{r} {s}" for r, s in sorted(statuses.items())))
            if ota_settled(release, OTA_WANT) or time.monotonic() > deadline:
                break
            time.sleep(1.0)
    finally:
        # a halted region stays open until stopped: stop it, so the firmware can be withdrawn later
        with contextlib.suppress(DemoError):
            ota.post(f"/v1/releases/{release_id}/stop", {"reason": "just demo: done"})
        sim.put("/sim/ota/faults", {"rules": []})
    problems = ota_problems(release, OTA_WANT)
    if problems:
        raise DemoError(f"ota: release {release_id} within {timeout:.0f}s: " + "; ".join(problems))
    say(f"ota: {OTA_FAILING_REGION} halted on its failures, the other region completed")
    say("")
    say(
        format_table(
            ("region", "status", "stage", "targeted", "succeeded", "failed", "open"), ota_rows(release)
        )
    )
    say("")


def run_lifecycle(
    sim: Api, pairing: Api, unbinding: Api, options: DemoOptions, ota: Api | None = None, say: Any = print
) -> int:
    """After status: pairing, then unbinding, on a fleet of their own (the status part's is done with); then
    OTA on a fleet over two regions."""
    began = time.monotonic()
    seed = options.seed if options.seed is not None else random.randrange(1, 2**31)
    pairing.get("/v1/pairing-sessions", {"limit": "1"})  # both API keys work before anything is made
    unbinding.get(f"/v1/quotas/account/{STACK_ACCOUNT}")
    fleet = make_lifecycle_fleet(sim, seed, options.unbind_devices)
    say(
        f"simulator: a new fleet for pairing and unbinding: {options.unbind_devices} strongly bound devices, "
        f"2 factory-fresh, seed {seed}"
    )
    run_pairing(sim, pairing, fleet, options.timeout, say)
    names = {p["product_id"]: p["name"] for p in sim.get("/sim/products")}
    run_unbinding(unbinding, fleet, options.unbind_devices, options.timeout, names, say)
    if ota is not None:
        run_ota(sim, ota, seed, options.ota_devices, options.timeout, say)
    say(
        f"pairing, unbinding and OTA {time.monotonic() - began:.1f}s; more: {pairing.base_url}/docs, "
        f"{unbinding.base_url}/docs" + (f", {ota.base_url}/docs" if ota is not None else "")
    )
    return 0


def url_of(name: str) -> str:
    """A service's address: `FLEET_<SERVICE>_URL` when set (services started elsewhere), else its dev port."""
    entry = service(name)
    return os.environ.get(entry.url_variable) or entry.dev_url


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fleet_devstack.demo", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=4.0, help="how long the devices report")
    parser.add_argument("--timeout", type=float, default=120.0, help="how long to wait for each part")
    parser.add_argument("--unbind", type=int, default=5, help="devices in the unbinding batch (at least 2)")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    if args.unbind < 2:
        parser.error("--unbind: at least 2 (one of them is refused for quota)")
    config = StackConfig.load()
    try:
        sim = Api("tuya-sim", url_of("tuya-sim"), os.environ.get("FLEET_SIM_CONTROL_TOKEN"))
        status = Api("status", url_of("status"), api_key(config, "status"))
        pairing = Api("pairing", url_of("pairing"), api_key(config, "pairing"))
        unbinding = Api("unbinding", url_of("unbinding"), api_key(config, "unbinding"))
        ota = Api("ota", url_of("ota"), api_key(config, "ota"))
        options = DemoOptions(
            devices=args.devices,
            report_seconds=args.seconds,
            timeout=args.timeout,
            seed=args.seed,
            unbind_devices=args.unbind,
        )
        run(sim, status, options, pulsar_admin=Api("pulsar", config.pulsar_admin_url))
        print()
        return run_lifecycle(sim, pairing, unbinding, options, ota)
    except DemoError as err:
        print(
            f"demo failed: {err}\nsee what the services said: `just logs` (or `uv run devstack logs`)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
