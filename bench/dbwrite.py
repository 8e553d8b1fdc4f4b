"""Storage ceiling of the MongoDB-wire server: the write pattern every service uses, straight from motor.

Every service keeps its state in single documents changed by conditional writes (filter on `_id` and the
version read, so a concurrent or replayed change matches nothing) and appends small documents in batches.
This measures, against whatever `FLEET_MONGODB_URI` (or `--uri`) points at (the local FerretDB on SQLite or
on PostgreSQL, a real MongoDB), with 1, 4 and 16 operations in flight:
- `replace`: `replace_one({_id, version}, doc)` of ~1 KB documents picked at random among 10,000;
- `update`: `update_one({_id, version}, {$set: {...}, $inc: {version: 1}})` on the same documents;
- `insert_many`: batches of small (~120 B) new documents.
With `--shape status` the ~1 KB documents also hold what the status service's shadows hold besides DPs: a
journal of DP reports as JSON text in strings and an outbox event as bytes (BSON binary), which cost the local
FerretDB more to convert than plain fields.
Reported per pattern and level: writes/s (documents for insert_many), p50/p99 latency per operation, and the
conditional writes that matched nothing (must be 0: each in-flight operation owns its documents, so a miss
means the server lost or misapplied a write). With `--pids`, the CPU those processes (say FerretDB and
PostgreSQL, their children included) used per second during each level and while idle afterwards. Medians
of `--runs` runs, the machine's load average beside them. It writes into a database of its own and drops it.

With `--queries N`, instead: N shadows with the status service's indexes, then the status service's
device-list queries (filter, sort by `_id`, limit 500; first and next page) timed (median of 3), with what
the server's explain says it pushed down and its scan nodes.

    uv run python bench/dbwrite.py [--uri mongodb://...] [--runs 3] [--seconds 8] [--pids 123,456]
    uv run python bench/dbwrite.py --queries 100000 [--uri ...]

Writes bench/results/dbwrite.json (or --out).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import secrets
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from motor.motor_asyncio import AsyncIOMotorClient, AsyncIOMotorCollection

RESULTS = Path(__file__).parent / "results" / "dbwrite.json"
PRODUCTS = [f"product{i:02d}" for i in range(10)]
Doc = dict[str, Any]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))] if ordered else float("nan")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of the processes and their children that have exited (reaped)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        # utime, stime, cutime, cstime are fields 14-17 of stat; after the ")" they start at index 11
        total += sum(int(v) for v in fields[11:15]) / tick
    return total


def process_tree(pids: list[int]) -> list[int]:
    """The pids and all their descendants (PostgreSQL runs a process per connection)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], list(pids)
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def server_cpu(pids: list[int]) -> float | None:
    if not pids:
        return None
    try:
        return cpu_seconds(process_tree(pids))
    except (FileNotFoundError, ProcessLookupError):
        return None  # a connection process ended between listing and reading: this sample is lost


def shadow(i: int, version: int, pad: str, shape: str = "plain") -> Doc:
    """A ~1 KB document shaped like a device shadow (`shape` "status": with a journal and an outbox)."""
    return {
        "_id": f"dev{i:06d}",
        "version": version,
        "product_id": PRODUCTS[i % len(PRODUCTS)],
        "binding": {"home_id": f"home{i % 2000:05d}", "uid": f"uid{i % 500:04d}"},
        "presence": {"online": i % 3 != 0, "deadline_ms": 1_700_000_000_000 + i},
        "dps": {
            str(dp): {"value": (i * dp + version) % 1000, "t": 1_700_000_000_000 + version}
            for dp in range(1, 9)
        },
        "updated_at": datetime.now(UTC),
        **(status_parts(i, version) if shape == "status" else {}),
        "pad": pad,
    }


def status_parts(i: int, version: int) -> Doc:
    """The journal and outbox of a status shadow (fleet_status.adapters.shadows.shadow_to_doc's layout)."""
    t = 1_700_000_000_000 + version
    readings = [
        {"code": f"dp_{dp}", "dp_id": dp, "value": (i * dp + version) % 1000, "raw": None, "t": t}
        for dp in (1, 2, 3)
    ]
    event = {
        "id": f"evt-{i}-{version}",
        "type": "device.status.changed",
        "device_id": f"dev{i:06d}",
        "dps": readings,
    }
    return {
        "outbox": [
            {
                "id": f"evt-{i}-{version}",
                "topic": "persistent://fleet/device/events",
                "key": f"dev{i:06d}",
                "body": orjson.dumps(event),
            }
        ],
        "journal": {
            "since_ms": t,
            "dps": orjson.dumps(readings).decode(),
            "presence": orjson.dumps([{"online": i % 3 != 0, "t": t}]).decode(),
        },
    }


async def seed(
    col: AsyncIOMotorCollection[Doc], docs: int, doc_bytes: int, shape: str = "plain"
) -> tuple[dict[int, int], str]:
    size = len(orjson.dumps(shadow(0, 0, "", shape), default=bytes.hex).decode())
    pad = "x" * max(0, doc_bytes - size)
    for start in range(0, docs, 500):
        await col.insert_many([shadow(i, 0, pad, shape) for i in range(start, min(docs, start + 500))])
    return dict.fromkeys(range(docs), 0), pad


async def conditional_level(
    col: AsyncIOMotorCollection[Doc],
    versions: dict[int, int],
    pad: str,
    kind: str,
    inflight: int,
    seconds: float,
    shape: str = "plain",
) -> dict[str, Any]:
    latencies: list[float] = []
    missed = 0
    deadline = time.monotonic() + seconds

    async def worker(mine: list[int]) -> None:
        nonlocal missed
        rng = random.Random(secrets.randbits(32))
        while time.monotonic() < deadline:
            i = rng.choice(mine)
            v = versions[i]
            began = time.perf_counter()
            if kind == "replace":
                result = await col.replace_one(
                    {"_id": f"dev{i:06d}", "version": v}, shadow(i, v + 1, pad, shape)
                )
            else:
                change = {
                    "$set": {"presence.online": v % 2 == 0, "dps.1.value": v, "updated_at": datetime.now(UTC)}
                }
                result = await col.update_one(
                    {"_id": f"dev{i:06d}", "version": v}, {**change, "$inc": {"version": 1}}
                )
            latencies.append(time.perf_counter() - began)
            if result.modified_count == 1:
                versions[i] = v + 1
            else:
                missed += 1

    ids = list(versions)
    began = time.monotonic()
    # each in-flight operation owns a share of the documents: a conditional write can only miss if lost
    await asyncio.gather(*(worker(ids[w::inflight]) for w in range(inflight)))
    elapsed = time.monotonic() - began
    return summary(len(latencies), elapsed, latencies, missed=missed)


async def insert_level(
    col: AsyncIOMotorCollection[Doc], inflight: int, seconds: float, batch: int
) -> dict[str, Any]:
    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    counter = 0

    async def worker() -> None:
        nonlocal counter
        while time.monotonic() < deadline:
            start, counter = counter, counter + batch
            docs = [
                {
                    "device_id": f"dev{(start + k) % 10_000:06d}",
                    "dp": (start + k) % 8,
                    "value": start + k,
                    "seq": start + k,
                }
                for k in range(batch)
            ]
            began = time.perf_counter()
            await col.insert_many(docs, ordered=False)
            latencies.append(time.perf_counter() - began)

    began = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(inflight)))
    elapsed = time.monotonic() - began
    return summary(len(latencies) * batch, elapsed, latencies, batches=len(latencies))


def summary(writes: int, elapsed: float, latencies: list[float], **extra: int) -> dict[str, Any]:
    return {
        "writes": writes,
        "seconds": round(elapsed, 2),
        "writes_per_s": round(writes / elapsed, 1),
        "p50_ms": round(percentile(latencies, 50) * 1000, 2),
        "p99_ms": round(percentile(latencies, 99) * 1000, 2),
        **extra,
    }


async def server_info(client: AsyncIOMotorClient[Doc]) -> dict[str, Any]:
    info = await client.admin.command("buildInfo")
    found = {"version": info.get("version")}
    found.update({k: v for k, v in info.items() if k.lower().startswith("ferretdb")})
    try:
        status = await client.admin.command("serverStatus")
        if "ferretdb" in status:
            found["ferretdb"] = status["ferretdb"]
    except Exception as e:
        found["serverStatus"] = str(e)
    return found


async def run(args: argparse.Namespace) -> dict[str, Any]:
    client: AsyncIOMotorClient[Doc] = AsyncIOMotorClient(
        args.uri, serverSelectionTimeoutMS=15_000, maxPoolSize=64
    )
    database = f"bench_dbwrite_{secrets.token_hex(4)}"
    pids = [int(p) for p in args.pids.split(",") if p]
    levels = [int(c) for c in args.inflight.split(",")]
    results: dict[str, Any] = {
        "bench": "dbwrite",
        "label": args.label,
        "uri": args.uri,
        "database": database,
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "started": datetime.now(UTC).isoformat(),
        "params": {k: v for k, v in vars(args).items() if k != "out"},
        "runs": [],
    }
    try:
        results["server"] = await server_info(client)
        print(f"server: {results['server']}  database: {database}  load: {os.getloadavg()}", flush=True)
        db = client[database]
        began = time.monotonic()
        versions, pad = await seed(db["shadows"], args.docs, args.doc_bytes, args.shape)
        results["seed_s"] = round(time.monotonic() - began, 2)
        for run_no in range(args.runs):
            rows: list[dict[str, Any]] = []
            for pattern in ("replace", "update", "insert_many"):
                for inflight in levels if pattern != "insert_many" else levels[:2]:
                    cpu0, t0 = server_cpu(pids), time.monotonic()
                    if pattern == "insert_many":
                        row = await insert_level(db["journal"], inflight, args.seconds, args.insert_batch)
                    else:
                        row = await conditional_level(
                            db["shadows"], versions, pad, pattern, inflight, args.seconds, args.shape
                        )
                    cpu1, t1 = server_cpu(pids), time.monotonic()
                    if cpu0 is not None and cpu1 is not None:
                        row["server_cpu_per_s"] = round((cpu1 - cpu0) / (t1 - t0), 2)
                    row |= {"run": run_no + 1, "pattern": pattern, "inflight": inflight}
                    row["load_1m"] = round(os.getloadavg()[0], 2)
                    rows.append(row)
                    print(
                        f"run {run_no + 1} {pattern:<11} {inflight:>2} in flight: "
                        f"{row['writes_per_s']:>8.1f} writes/s  p50 {row['p50_ms']:>7.2f} ms  "
                        f"p99 {row['p99_ms']:>8.2f} ms  missed {row.get('missed', 0)}"
                        f"  server CPU {row.get('server_cpu_per_s', '-')}/s  load {row['load_1m']}",
                        flush=True,
                    )
            results["runs"].append(rows)
        if pids and args.idle_seconds > 0:
            cpu0, t0 = server_cpu(pids), time.monotonic()
            await asyncio.sleep(args.idle_seconds)
            cpu1, t1 = server_cpu(pids), time.monotonic()
            if cpu0 is not None and cpu1 is not None:
                results["idle_server_cpu_per_s"] = round((cpu1 - cpu0) / (t1 - t0), 3)
                print(
                    f"idle {args.idle_seconds:.0f} s after load: "
                    f"server CPU {results['idle_server_cpu_per_s']}/s"
                )
    finally:
        await client.drop_database(database)
        client.close()
    results["medians"] = medians(results["runs"])
    results["loadavg_1_5_15"] = [round(x, 2) for x in os.getloadavg()]
    return results


# The status service's device-list queries (fleet_status.adapters.shadows.ShadowStore.list_filter's shapes):
# most selective field first, always a string bound on `_id`, sorted by `_id`, 500 a page.
LIST_QUERIES: list[tuple[str, Doc]] = [
    ("no filter", {}),
    ("product_id", {"product_id": "product03"}),
    ("home_id", {"binding.home_id": "home00042"}),
    ("online=false", {"presence.online": False}),
    ("product_id & online", {"product_id": "product03", "presence.online": True}),
    (
        "home_id & product_id & online",
        {"binding.home_id": "home00042", "product_id": "product02", "presence.online": True},
    ),
]
STATUS_INDEXES = [
    [("product_id", 1), ("_id", 1)],
    [("binding.home_id", 1), ("_id", 1)],
    [("presence.online", 1), ("_id", 1)],
    [("updated_at", 1)],
    [("presence.deadline_ms", 1)],
]


async def run_queries(args: argparse.Namespace) -> dict[str, Any]:
    client: AsyncIOMotorClient[Doc] = AsyncIOMotorClient(args.uri, serverSelectionTimeoutMS=15_000)
    database = f"bench_dbquery_{secrets.token_hex(4)}"
    pids = [int(p) for p in args.pids.split(",") if p]
    results: dict[str, Any] = {"bench": "dbwrite --queries", "label": args.label, "database": database}
    try:
        results["server"] = await server_info(client)
        col = client[database]["shadows"]
        for keys in STATUS_INDEXES:
            await col.create_index(keys)
        began = time.monotonic()
        pad = "x" * max(0, args.doc_bytes - len(orjson.dumps(shadow(0, 0, "")).decode()))
        for start in range(0, args.queries, 1000):
            await col.insert_many([shadow(i, 0, pad) for i in range(start, min(args.queries, start + 1000))])
        results["seed_s"] = round(time.monotonic() - began, 1)
        print(f"{args.queries} shadows seeded in {results['seed_s']} s; load {os.getloadavg()}", flush=True)
        rows = []
        for name, filter_ in [*LIST_QUERIES, ("shadow by id", {"_id": "dev004242"})]:
            row: dict[str, Any] = {"query": name}
            for page in ("first", "next"):
                if name == "shadow by id" and page == "next":
                    continue
                query = dict(filter_)
                if name != "shadow by id":
                    query["_id"] = {"$gte": ""} if page == "first" else {"$gt": "dev050000"}
                times = []
                for _ in range(3):
                    t0 = time.perf_counter()
                    docs = await col.find(query, {"pad": 0}).sort("_id", 1).limit(500).to_list(None)
                    times.append(time.perf_counter() - t0)
                row[f"{page}_ms"] = round(statistics.median(times) * 1000, 1)
                row[f"{page}_docs"] = len(docs)
                explain = await client[database].command(
                    "explain", {"find": "shadows", "filter": query, "sort": {"_id": 1}, "limit": 500}
                )
                row[f"{page}_pushdown"] = {
                    k: explain.get(k)
                    for k in ("filterPushdown", "sortPushdown", "limitPushdown")
                    if k in explain
                }
                row[f"{page}_plan"] = plan_summary(explain.get("queryPlanner"))
            rows.append(row)
            print(f"{name:<32} {row}", flush=True)
        results["queries"] = rows
        if pids and args.idle_seconds > 0:
            cpu0, t0 = server_cpu(pids), time.monotonic()
            await asyncio.sleep(args.idle_seconds)
            cpu1, t1 = server_cpu(pids), time.monotonic()
            if cpu0 is not None and cpu1 is not None:
                results["idle_server_cpu_per_s"] = round((cpu1 - cpu0) / (t1 - t0), 3)
                print(
                    f"idle {args.idle_seconds:.0f} s after the queries: "
                    f"server CPU {results['idle_server_cpu_per_s']}/s"
                )
    finally:
        await client.drop_database(database)
        client.close()
    results["loadavg_1_5_15"] = [round(x, 2) for x in os.getloadavg()]
    return results


def plan_summary(planner: Any) -> str:
    """The scan nodes of a plan (PostgreSQL's JSON plan or SQLite's rows), short."""
    text = orjson.dumps(planner).decode() if planner is not None else ""
    found = []
    for marker in (
        "Seq Scan",
        "Index Scan",
        "Index Only Scan",
        "Bitmap",
        "Sort",
        "USING INDEX",
        "SCAN",
        "SEARCH",
    ):
        if marker in text:
            found.append(marker)
    return ", ".join(found)


def medians(runs: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    keyed: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for rows in runs:
        for row in rows:
            keyed.setdefault((row["pattern"], row["inflight"]), []).append(row)
    out = []
    for (pattern, inflight), rows in keyed.items():
        median = {"pattern": pattern, "inflight": inflight, "runs": len(rows)}
        for key in ("writes_per_s", "p50_ms", "p99_ms", "server_cpu_per_s", "load_1m"):
            values = [r[key] for r in rows if key in r]
            if values:
                median[key] = round(statistics.median(values), 2)
        median["missed"] = sum(r.get("missed", 0) for r in rows)
        out.append(median)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--uri", default=os.environ.get("FLEET_MONGODB_URI", "mongodb://127.0.0.1:27017/"))
    parser.add_argument(
        "--label", default="", help="what the server is (printed and stored with the figures)"
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0, help="per pattern and level")
    parser.add_argument("--docs", type=int, default=10_000)
    parser.add_argument("--doc-bytes", type=int, default=1000)
    parser.add_argument(
        "--shape", choices=("plain", "status"), default="plain", help="status: with a journal and an outbox"
    )
    parser.add_argument("--inflight", default="1,4,16", help="operations in flight per level")
    parser.add_argument("--insert-batch", type=int, default=500, help="documents per insert_many")
    parser.add_argument("--pids", default="", help="server pids to measure CPU of (children included)")
    parser.add_argument(
        "--idle-seconds", type=float, default=20.0, help="CPU sample after the load (with --pids)"
    )
    parser.add_argument(
        "--queries", type=int, default=0, help="time the status list queries at this many shadows"
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.queries:
        results = asyncio.run(run_queries(args))
        out = args.out or RESULTS.with_name("dbquery.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
        print(f"written to {out}")
        return
    results = asyncio.run(run(args))
    print(f"\nmedians of {args.runs} run(s), {args.label or args.uri}, load {results['loadavg_1_5_15']}:")
    print(
        f"{'pattern':<12}{'in flight':>10}{'writes/s':>11}{'p50 ms':>9}{'p99 ms':>9}{'missed':>8}"
        f"{'srv CPU/s':>11}"
    )
    for m in results["medians"]:
        print(
            f"{m['pattern']:<12}{m['inflight']:>10}{m['writes_per_s']:>11.1f}{m['p50_ms']:>9.2f}{m['p99_ms']:>9.2f}"
            f"{m['missed']:>8}{m.get('server_cpu_per_s', '-'):>11}"
        )
    out = args.out or RESULTS
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
    print(f"written to {out}")


if __name__ == "__main__":
    main()
