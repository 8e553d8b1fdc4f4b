"""Resident memory (RSS) of every service process a command starts, sampled while it runs: the figures behind
the Helm chart's requests and limits (infra/helm/README.md, "Resources").

Runs COMMAND (a benchmark or an e2e test that starts the services as processes: `python -m fleet_<service>` or
the `fleet-<service>` scripts), and every `--interval` seconds reads /proc for each descendant process whose
command line names a service (ingest, status, pairing, unbinding, ota, tuya-sim). Per service it prints the
processes seen, the peak RSS of any one of them (a pod's limit must hold it), and its steady RSS (the median
of each process's samples over the second half of its life, the largest over the service's processes: a
pod's request). Writes the same as JSON to `bench/results/rss-<time>.json`; COMMAND's exit status is kept.

    uv run python bench/rss.py [--interval 0.5] [--label NAME] -- COMMAND...
    uv run python bench/rss.py --attach PID     # a command already running: its descendants until it exits

e.g. `uv run python bench/rss.py --label unbinding -- uv run python bench/unbinding.py --devices 10000`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

SERVICE = re.compile(r"fleet[-_](ingest|ota|pairing|status|unbinding|tuya[-_]sim)\b")
PAGE = os.sysconf("SC_PAGE_SIZE")
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Process:
    service: str
    started: float
    samples: list[tuple[float, int]] = field(default_factory=list)  # (time, RSS bytes)

    @property
    def peak(self) -> int:
        return max(rss for _, rss in self.samples)

    @property
    def steady(self) -> int:
        """The median over the second half of the process's sampled life (start-up excluded)."""
        first, last = self.samples[0][0], self.samples[-1][0]
        later = [rss for t, rss in self.samples if t >= (first + last) / 2]
        return int(statistics.median(later))


def children_of() -> dict[int, list[int]]:
    out: dict[int, list[int]] = defaultdict(list)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                # the parent pid is the 2nd field after the command name, which may hold spaces
                stat = (entry / "stat").read_text()
                out[int(stat.rsplit(")", 1)[1].split()[1])].append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return out


def descendants(root: int) -> list[int]:
    tree, out, todo = children_of(), [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(tree.get(pid, []))
    return out


def service_of(pid: int) -> str | None:
    try:
        cmdline = (Path(f"/proc/{pid}/cmdline").read_bytes()).replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    if "bench/rss.py" in cmdline:
        return None
    match = SERVICE.search(cmdline)
    return match.group(1).replace("_", "-") if match else None


def rss_bytes(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return None


def sample(root: int, seen: dict[int, Process]) -> None:
    now = time.monotonic()
    for pid in descendants(root):
        process = seen.get(pid)
        if process is None:
            service = service_of(pid)
            if service is None:
                continue
            process = seen[pid] = Process(service, now)
        rss = rss_bytes(pid)
        if rss is not None:
            process.samples.append((now, rss))


def summary(seen: dict[int, Process]) -> dict[str, dict[str, float]]:
    by_service: dict[str, list[Process]] = defaultdict(list)
    for process in seen.values():
        if process.samples:
            by_service[process.service].append(process)
    mib = 2**20
    return {
        service: {
            "processes": len(processes),
            "peak_mib": round(max(p.peak for p in processes) / mib, 1),
            "steady_mib": round(max(p.steady for p in processes) / mib, 1),
            "samples": sum(len(p.samples) for p in processes),
        }
        for service, processes in sorted(by_service.items())
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between samples")
    parser.add_argument("--label", default="", help="a name for this run in the JSON")
    parser.add_argument("--attach", type=int, help="sample a running process's descendants instead")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND...")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command and args.attach is None:
        parser.error("a command to run (-- COMMAND...) or --attach PID")
    began, load_before = time.time(), os.getloadavg()[0]
    child = None if args.attach else subprocess.Popen(command)  # noqa: S603 - the operator's own command
    root = args.attach or (child.pid if child else 0)
    if args.attach:
        command = [Path(f"/proc/{root}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()]
    seen: dict[int, Process] = {}
    loads = [load_before]
    try:
        while child.poll() is None if child else Path(f"/proc/{root}").exists():
            sample(root, seen)
            loads.append(os.getloadavg()[0])
            time.sleep(args.interval)
    except KeyboardInterrupt:
        if child:
            child.terminate()
            child.wait()
    figures = summary(seen)
    load = f"load average {min(loads):.1f}-{max(loads):.1f}"
    print(f"\nRSS per service ({args.label or ' '.join(command)}; {load})")
    print(f"{'service':<10} {'processes':>9} {'peak MiB':>9} {'steady MiB':>11}")
    for service, f in figures.items():
        print(f"{service:<10} {f['processes']:>9} {f['peak_mib']:>9.1f} {f['steady_mib']:>11.1f}")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"rss-{time.strftime('%Y%m%dT%H%M%S', time.gmtime(began))}.json"
    out.write_text(
        json.dumps(
            {
                "label": args.label,
                "command": command,
                "exit": child.returncode if child else None,
                "seconds": round(time.time() - began, 1),
                "load_average": [min(loads), max(loads)],
                "services": figures,
            },
            indent=2,
        )
    )
    print(f"(written to {out})")
    return (child.returncode if child else 0) or 0


if __name__ == "__main__":
    sys.exit(main())
