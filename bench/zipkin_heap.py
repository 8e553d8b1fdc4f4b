"""How much of the dev stack's Zipkin heap a span takes (in-memory storage), to size
FLEET_STACK_ZIPKIN_MAX_SPANS against FLEET_STACK_ZIPKIN_HEAP.

Starts a Zipkin server of its own (the stack's jar, in-memory storage, the stack's JVM flags, a free port; the
shared stack's Zipkin is not touched), posts spans shaped like the services' (the messaging, database and HTTP
spans with the attributes the services set: ~0.8 KB of JSON each, sampled from a running Zipkin with
`--sample-from`), in traces of `--trace-spans`, and after every `--step` spans runs a full GC (`jcmd GC.run`)
and reads the heap in use (`jcmd GC.heap_info`). Prints heap per span; stops its server when done.

    uv run python bench/zipkin_heap.py [--spans 400000] [--step 100000] [--heap 2g]
        [--sample-from http://127.0.0.1:9411] [--jar PATH]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from fleet_devstack.build import zipkin_jar
from fleet_devstack.config import StackConfig


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def request(url: str, body: bytes | None = None) -> bytes:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})  # noqa: S310
    with urllib.request.urlopen(req, timeout=60) as resp:  # noqa: S310
        return bytes(resp.read())


def template_spans() -> list[dict[str, Any]]:
    """One device message's spans as the services export them (names and tags as in their Zipkin output)."""
    common = {
        "otel.scope.version": "",
        "telemetry.sdk.language": "python",
        "telemetry.sdk.name": "opentelemetry",
        "telemetry.sdk.version": "1.45.2",
    }

    def span(service: str, kind: str, name: str, **tags: str) -> dict[str, Any]:
        return {
            "kind": kind,
            "name": name,
            "duration": 1500,
            "localEndpoint": {"serviceName": service},
            "tags": {
                **common,
                "otel.library.name": f"fleet_{service}",
                "otel.scope.name": f"fleet_{service}",
                "service.instance.id": "78dd66a0-9f77-49e9-8530-d05538b6da0f",
                "service.name": service,
                **tags,
            },
        }

    device = {"messaging.message.conversation_id": "vdevo172839465012345", "messaging.system": "pulsar"}
    return [
        span("tuya-sim", "PRODUCER", "persistent://tuya/out/event publish", **device),
        span("ingest", "CONSUMER", "persistent://tuya/out/event process", **device),
        span("ingest", "PRODUCER", "persistent://fleet/device/events publish", **device),
        span("status", "CONSUMER", "persistent://fleet/device/events process", **device),
        span(
            "status", "CLIENT", "update shadows", **{"db.system": "mongodb", "db.collection.name": "shadows"}
        ),
        span("status", "PRODUCER", "persistent://fleet/status/shadow-events publish", **device),
        span("pairing", "CONSUMER", "persistent://fleet/device/events process", **device),
        span("ota", "SERVER", "GET /v1/releases/{release_id}", **{"http.request.method": "GET"}),
    ]


def sampled_spans(zipkin: str) -> list[dict[str, Any]]:
    traces = json.loads(request(f"{zipkin}/api/v2/traces?limit=100&lookback=86400000"))
    return [s for trace in traces for s in trace]


def traces(templates: list[dict[str, Any]], count: int, per_trace: int) -> list[dict[str, Any]]:
    """`count` spans with fresh ids, `per_trace` to a trace, each a parent of the next."""
    out: list[dict[str, Any]] = []
    now_us = int(time.time() * 1e6)
    while len(out) < count:
        trace_id, parent = secrets.token_hex(16), None
        for i in range(min(per_trace, count - len(out))):
            s = copy.deepcopy(templates[(len(out) + i) % len(templates)])
            s.pop("parentId", None)
            s.update(traceId=trace_id, id=secrets.token_hex(8), timestamp=now_us + i)
            if parent:
                s["parentId"] = parent
            parent = s["id"]
            out.append(s)
    return out


def heap_used_bytes(pid: int) -> int:
    """The heap in use after a full collection (the serial collector's young and old generations)."""
    jcmd = shutil.which("jcmd") or "jcmd"
    subprocess.run([jcmd, str(pid), "GC.run"], check=True, capture_output=True)  # noqa: S603 - fixed argv
    info = subprocess.run(  # noqa: S603 - fixed argv
        [jcmd, str(pid), "GC.heap_info"], check=True, capture_output=True, text=True
    ).stdout
    used = re.findall(r"generation\s+total \d+K, used (\d+)K", info)
    if not used:
        raise RuntimeError(f"no heap figures in jcmd's answer:\n{info}")
    return sum(int(k) for k in used) * 1024


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--spans", type=int, default=400_000)
    parser.add_argument("--step", type=int, default=100_000)
    parser.add_argument("--heap", default="2g", help="the measuring server's -Xmx (above what is measured)")
    parser.add_argument("--trace-spans", type=int, default=8)
    parser.add_argument("--sample-from", help="a Zipkin whose recent spans are the templates")
    parser.add_argument("--jar", type=Path, help="the Zipkin exec jar (default: the stack's)")
    args = parser.parse_args()
    if shutil.which("jcmd") is None:
        print("needs jcmd (a JDK) to read the heap", file=sys.stderr)
        return 2
    templates = sampled_spans(args.sample_from) if args.sample_from else template_spans()
    if not templates:
        print(f"no spans at {args.sample_from}", file=sys.stderr)
        return 2
    mean_json = sum(len(json.dumps(s)) for s in templates) / len(templates)
    jar = args.jar or zipkin_jar(StackConfig.load())
    port = free_port()
    home = Path(tempfile.mkdtemp(prefix="zipkin-heap-"))
    argv = [
        "java",
        "-Xms64m",
        f"-Xmx{args.heap}",
        "-XX:+UseSerialGC",
        f"-Djava.io.tmpdir={home}",
        "-jar",
        str(jar),
    ]
    env = {
        **os.environ,
        "STORAGE_TYPE": "mem",
        "MEM_MAX_SPANS": str(args.spans * 2),  # nothing evicted while measuring
        "QUERY_PORT": str(port),
        "SELF_TRACING_ENABLED": "false",
    }
    log = (home / "zipkin.log").open("wb")
    server = subprocess.Popen(  # noqa: S603 - fixed argv
        argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=home
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                request(f"{url}/health")
                break
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline or server.poll() is not None:
                    print(f"Zipkin did not start: {home / 'zipkin.log'}", file=sys.stderr)
                    return 1
                time.sleep(1)
        empty = heap_used_bytes(server.pid)
        shape = f"{len(templates)} span templates, {mean_json:.0f} B of JSON each"
        print(f"{shape}; empty heap {empty / 2**20:.0f} MiB")
        stored = 0
        rows = []
        while stored < args.spans:
            step = min(args.step, args.spans - stored)
            spans = traces(templates, step, args.trace_spans)
            for i in range(0, len(spans), 2000):
                request(f"{url}/api/v2/spans", json.dumps(spans[i : i + 2000]).encode())
            stored += step
            time.sleep(1)  # the collector stores asynchronously
            used = heap_used_bytes(server.pid)
            per_span = (used - empty) / stored
            rows.append({"spans": stored, "heap_mib": used / 2**20, "bytes_per_span": per_span})
            print(f"{stored:>8} spans: heap {used / 2**20:7.0f} MiB, {per_span:6.0f} B per span", flush=True)
        print(json.dumps({"json_bytes_per_span": mean_json, "empty_heap_mib": empty / 2**20, "steps": rows}))
        return 0
    finally:
        server.terminate()
        server.wait(30)
        log.close()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
