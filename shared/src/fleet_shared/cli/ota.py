"""`fleet ota`: the firmware catalog and staged releases of the OTA service (`/v1/firmware`, `/v1/releases`).

    fleet ota firmware add --product PID --version 1.3.0 --size N --md5 HEX --signature S --url URL
                           [--channel 0] [--upgrade-type 1] [--packet-timeout 60]
    fleet ota firmware show FIRMWARE_ID [--json]
    fleet ota firmware withdraw FIRMWARE_ID
    fleet ota devices import FILE|-            (CSV: device_id, product_id, region, activated_at, versions)
    fleet ota release create RELEASE_ID --firmware FIRMWARE_ID --region eu [--region us ...]
                           [--canary-ratio 0.1 | --canary-quantity 50] [--verify DEVICE ...]
                           [--promote-at 0.95 --promote-sample 50] [--halt-at 0.1 --halt-sample 20]
                           [--per-minute 600] [--jitter 0.2] [--start-at ISO] [--no-late-joiners]
    fleet ota release show RELEASE_ID [--json]
    fleet ota release watch RELEASE_ID [--interval 2] [--timeout S]   (live bars per region and stage)
    fleet ota release pause|resume|stop|promote RELEASE_ID [--region R] [--reason TEXT]

Exit codes: 0 done, 1 ota refused or is unreachable, 2 usage.
"""

from __future__ import annotations

import csv
import io
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import TaskID

from .errors import CliError, UsageError, reports_errors
from .http import CliContext, ServiceClient
from .output import Column, JsonOption, emit_json, note, print_table, progress_bars

SERVICE = "ota"
SETTLED = frozenset({"completed", "stopped", "halted"})  # a watch ends when every region is in one of these
IMPORT_CHUNK = 1000

app = typer.Typer(help="Firmware catalog and staged releases per region.", no_args_is_help=True)
firmware_app = typer.Typer(help="The firmware catalog.", no_args_is_help=True)
devices_app = typer.Typer(help="ota's device directory.", no_args_is_help=True)
release_app = typer.Typer(
    help="Releases: create, follow, pause, resume, stop, promote.", no_args_is_help=True
)
app.add_typer(firmware_app, name="firmware")
app.add_typer(devices_app, name="devices")
app.add_typer(release_app, name="release")

FIRMWARE_COLUMNS = (
    Column("firmware_id", lambda f: f["firmware_id"], key=True),
    Column("product", lambda f: f["product_id"]),
    Column("channel", lambda f: f["channel"], justify="right"),
    Column("version", lambda f: f["version"]),
    Column("size", lambda f: f["size_bytes"], justify="right"),
    Column("type", lambda f: f["upgrade_type"], justify="right"),
    Column("registered", lambda f: f["registered_at"]),
    Column("withdrawn", lambda f: f.get("withdrawn_at")),
)

PROGRESS_COLUMNS = (
    Column("region", lambda r: r["region"], key=True),
    Column("status", lambda r: r["status"]),
    Column("stage", lambda r: r["stage"], key=True),
    Column("targeted", lambda r: r["targeted"], justify="right"),
    Column("pending", lambda r: r["pending"], justify="right"),
    Column("upgrading", lambda r: r["upgrading"], justify="right"),
    Column("waiting", lambda r: r["waiting"], justify="right"),
    Column("succeeded", lambda r: r["succeeded"], justify="right"),
    Column("failed", lambda r: r["failed"], justify="right"),
    Column("cancelled", lambda r: r["cancelled"], justify="right"),
    Column("success", lambda r: _percent(r["success_rate"]), justify="right"),
    Column("failure", lambda r: _percent(r["failure_rate"]), justify="right"),
)


def _percent(rate: float | None) -> str | None:
    return None if rate is None else f"{rate:.1%}"


def _client(ctx: typer.Context) -> ServiceClient:
    context = ctx.find_object(CliContext) or CliContext()
    return context.client(SERVICE)


def progress_rows(release: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per region and stage (a region not started yet: one row without counters)."""
    rows: list[dict[str, Any]] = []
    for region in release["regions"]:
        stages = region["stages"] or [
            dict.fromkeys(
                ("targeted", "pending", "upgrading", "waiting", "succeeded", "failed", "cancelled"), 0
            )
            | {"stage": region["stage"] or "-", "success_rate": None, "failure_rate": None}
        ]
        rows += [{"region": region["region"], "status": region["status"], **s} for s in stages]
    return rows


# --- firmware ---------------------------------------------------------------------------------------------


@firmware_app.command("add")
@reports_errors
def firmware_add(
    ctx: typer.Context,
    product: Annotated[str, typer.Option("--product", help="Product id (PID).")],
    version: Annotated[str, typer.Option("--version", help="Dotted version, e.g. 1.3.0.")],
    size: Annotated[int, typer.Option("--size", min=1, help="File size in bytes.")],
    md5: Annotated[str, typer.Option("--md5", help="MD5 of the file (32 hex digits).")],
    signature: Annotated[str, typer.Option("--signature", help="HMAC signature of the file.")],
    url: Annotated[str, typer.Option("--url", help="https download URL.")],
    channel: Annotated[int, typer.Option("--channel", help="0 module, 1 BT, 3 Zigbee, 9 MCU, 10-19.")] = 0,
    upgrade_type: Annotated[
        int, typer.Option("--upgrade-type", min=0, max=3, help="0 reminder, 1 silent, 2 forced, 3 check.")
    ] = 1,
    packet_timeout: Annotated[int, typer.Option("--packet-timeout", help="Seconds per packet.")] = 60,
    as_json: JsonOption = False,
) -> None:
    """Register a firmware build (immutable: the same content again changes nothing)."""
    body = {
        "product_id": product,
        "channel": channel,
        "version": version,
        "size_bytes": size,
        "md5": md5,
        "signature": signature,
        "url": url,
        "upgrade_type": upgrade_type,
        "packet_timeout_s": packet_timeout,
    }
    client = _client(ctx)
    try:
        firmware = client.post("/v1/firmware", body)
    finally:
        client.close()
    if as_json:
        emit_json(firmware)
    else:
        print_table(FIRMWARE_COLUMNS, [firmware], title="Registered")


@firmware_app.command("show")
@reports_errors
def firmware_show(ctx: typer.Context, firmware_id: str, as_json: JsonOption = False) -> None:
    """One catalog entry."""
    client = _client(ctx)
    try:
        firmware = client.get(f"/v1/firmware/{firmware_id}")
    finally:
        client.close()
    if as_json:
        emit_json(firmware)
    else:
        print_table(FIRMWARE_COLUMNS, [firmware])


@firmware_app.command("withdraw")
@reports_errors
def firmware_withdraw(ctx: typer.Context, firmware_id: str) -> None:
    """Withdraw a firmware (refused while a release of it is open: stop the release first)."""
    client = _client(ctx)
    try:
        firmware = client.request("DELETE", f"/v1/firmware/{firmware_id}")
    finally:
        client.close()
    note(f"withdrawn {firmware['firmware_id']} at {firmware['withdrawn_at']}")


# --- devices ----------------------------------------------------------------------------------------------


def parse_devices(text: str) -> list[dict[str, Any]]:
    """CSV rows `device_id, product_id, region, activated_at, versions` (`0:1.2.0;9:1.0.3`)."""
    rows = list(csv.DictReader(io.StringIO(text)))
    missing = {"device_id", "product_id", "region", "activated_at", "versions"} - set(rows[0] if rows else {})
    if missing:
        raise UsageError(f"the CSV lacks the columns {', '.join(sorted(missing))}")
    devices = []
    for n, row in enumerate(rows, start=2):
        try:
            versions = {
                int(ch): v for ch, _, v in (p.partition(":") for p in row["versions"].split(";") if p.strip())
            }
        except ValueError:
            raise UsageError(f"line {n}: versions must look like 0:1.2.0;9:1.0.3") from None
        devices.append(
            {
                "device_id": row["device_id"],
                "product_id": row["product_id"],
                "region": row["region"],
                "activated_at": row["activated_at"],
                "versions": versions,
            }
        )
    return devices


@devices_app.command("import")
@reports_errors
def devices_import(
    ctx: typer.Context, source: Annotated[str, typer.Argument(help="CSV file, or - for stdin.")]
) -> None:
    """Record devices (product, region, activation time, version per channel) in ota's directory."""
    text = sys.stdin.read() if source == "-" else Path(source).read_text()
    devices = parse_devices(text)
    client = _client(ctx)
    try:
        for i in range(0, len(devices), IMPORT_CHUNK):
            client.post("/v1/devices", {"devices": devices[i : i + IMPORT_CHUNK]})
    finally:
        client.close()
    note(f"recorded {len(devices)} devices")


# --- releases ---------------------------------------------------------------------------------------------


@release_app.command("create")
@reports_errors
def release_create(
    ctx: typer.Context,
    release_id: str,
    firmware: Annotated[str, typer.Option("--firmware", help="Firmware id (product:channel:version).")],
    regions: Annotated[list[str], typer.Option("--region", help="A data-center region (repeat).")],
    verify: Annotated[
        list[str] | None, typer.Option("--verify", help="A verification device (repeat).")
    ] = None,
    canary_ratio: Annotated[str | None, typer.Option("--canary-ratio", help="e.g. 0.1")] = None,
    canary_quantity: Annotated[int | None, typer.Option("--canary-quantity", min=1)] = None,
    promote_at: Annotated[float | None, typer.Option("--promote-at", help="Success rate to promote.")] = None,
    promote_sample: Annotated[int, typer.Option("--promote-sample", min=0)] = 0,
    halt_at: Annotated[float | None, typer.Option("--halt-at", help="Failure rate that halts.")] = None,
    halt_sample: Annotated[int, typer.Option("--halt-sample", min=0)] = 0,
    per_minute: Annotated[float, typer.Option("--per-minute", help="Devices per minute per region.")] = 60.0,
    jitter: Annotated[float, typer.Option("--jitter", min=0, max=0.99)] = 0.0,
    start_at: Annotated[str | None, typer.Option("--start-at", help="ISO time with zone.")] = None,
    late_joiners: Annotated[bool, typer.Option("--late-joiners/--no-late-joiners")] = True,
    as_json: JsonOption = False,
) -> None:
    """Create a release: the same plan in each region, each region its own state machine."""
    if canary_ratio is not None and canary_quantity is not None:
        raise UsageError("--canary-ratio or --canary-quantity, not both")
    plan: dict[str, Any] = {
        "verification_devices": verify or [],
        "late_joiners": late_joiners,
        "per_minute": per_minute,
        "jitter": jitter,
        "start_at": start_at,
        "canary_ratio": canary_ratio,
        "canary_quantity": canary_quantity,
        "promote_at": None if promote_at is None else {"rate": promote_at, "min_sample": promote_sample},
        "halt_at": None if halt_at is None else {"rate": halt_at, "min_sample": halt_sample},
    }
    body = {
        "release_id": release_id,
        "firmware_id": firmware,
        "regions": [plan | {"region": r} for r in regions],
    }
    client = _client(ctx)
    try:
        release = client.post("/v1/releases", body)
    finally:
        client.close()
    _show(release, as_json)


def _show(release: Mapping[str, Any], as_json: bool) -> None:
    if as_json:
        emit_json(release)
        return
    title = (
        f"{release['release_id']}: {release['firmware_id']} ({release['product_id']} -> {release['version']})"
    )
    print_table(PROGRESS_COLUMNS, progress_rows(release), title=title)


@release_app.command("show")
@reports_errors
def release_show(ctx: typer.Context, release_id: str, as_json: JsonOption = False) -> None:
    """The release's regions and their progress per stage."""
    client = _client(ctx)
    try:
        release = client.get(f"/v1/releases/{release_id}")
    finally:
        client.close()
    _show(release, as_json)


@release_app.command("watch")
@reports_errors
def release_watch(
    ctx: typer.Context,
    release_id: str,
    interval: Annotated[float, typer.Option("--interval", min=0.1, help="Seconds between polls.")] = 2.0,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="Give up after this many seconds.")
    ] = None,
) -> None:
    """Live progress bars per region and stage until every region is completed, stopped or halted."""
    client = _client(ctx)
    deadline = None if timeout is None else time.monotonic() + timeout
    bars = progress_bars()
    tasks: dict[tuple[str, str], TaskID] = {}
    try:
        with bars:
            while True:
                release = client.get(f"/v1/releases/{release_id}")
                for row in progress_rows(release):
                    key = (row["region"], row["stage"])
                    if key not in tasks:
                        tasks[key] = bars.add_task(f"{key[0]} {key[1]}", total=None, label="")
                    done = row["succeeded"] + row["failed"] + row["cancelled"]
                    label = (
                        f"{row['status']}  ok {row['succeeded']}  failed {row['failed']}"
                        f"  upgrading {row['upgrading']}  waiting {row['waiting']}"
                    )
                    bars.update(tasks[key], completed=done, total=row["targeted"] or None, label=label)
                if all(r["status"] in SETTLED for r in release["regions"]):
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    raise CliError(f"release {release_id}: still running after {timeout:.0f}s")
                time.sleep(interval)
    finally:
        client.close()
    _show(release, False)


def _command(
    ctx: typer.Context, action: str, release_id: str, region: str | None, reason: str | None
) -> None:
    path = f"/v1/releases/{release_id}" + (f"/regions/{region}" if region else "") + f"/{action}"
    client = _client(ctx)
    try:
        release = client.post(path, {"reason": reason} if reason else {})
    finally:
        client.close()
    _show(release, False)


RegionOption = Annotated[str | None, typer.Option("--region", help="Only this region (default: all).")]
ReasonOption = Annotated[str | None, typer.Option("--reason", help="Why (kept in the event).")]


@release_app.command("pause")
@reports_errors
def release_pause(
    ctx: typer.Context, release_id: str, region: RegionOption = None, reason: ReasonOption = None
) -> None:
    """Pause dispatching (devices in flight finish)."""
    _command(ctx, "pause", release_id, region, reason)


@release_app.command("resume")
@reports_errors
def release_resume(ctx: typer.Context, release_id: str, region: RegionOption = None) -> None:
    """Resume a paused or halted region."""
    _command(ctx, "resume", release_id, region, None)


@release_app.command("stop")
@reports_errors
def release_stop(ctx: typer.Context, release_id: str, region: RegionOption = None) -> None:
    """Stop for good: devices not yet commanded are cancelled."""
    _command(ctx, "stop", release_id, region, None)


@release_app.command("promote")
@reports_errors
def release_promote(ctx: typer.Context, release_id: str, region: RegionOption = None) -> None:
    """Promote to the next stage by hand."""
    _command(ctx, "promote", release_id, region, None)
