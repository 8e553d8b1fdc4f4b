"""`fleet status`: device shadows from the status service's API (`/v1/devices`).

    fleet status device DEVICE_ID [--json]
    fleet status devices [--product PID] [--home HOME] [--online/--offline] [--ids FILE|-]
                         [--max N] [--csv FILE|-] [--json]

Exit codes: 0 done, 1 status refused or is unreachable (or some `--ids` have no shadow), 2 usage.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Annotated, Any

import typer
from rich.table import Table

from .errors import CliError, RequestFailed, reports_errors
from .http import CliContext, ServiceClient
from .output import (
    Column,
    CsvOption,
    IdsOption,
    JsonOption,
    cell,
    emit_json,
    millis,
    note,
    print_table,
    read_device_ids,
    stdout,
    table,
    write_csv,
)

SERVICE = "status"
PAGE_SIZE = 500

app = typer.Typer(help="Device shadows: presence, DPs, binding, firmware.", no_args_is_help=True)


def _presence(shadow: Mapping[str, Any]) -> Mapping[str, Any]:
    return shadow.get("presence") or {}


def _binding(shadow: Mapping[str, Any]) -> Mapping[str, Any]:
    return shadow.get("binding") or {}


def _firmware_versions(shadow: Mapping[str, Any]) -> list[str]:
    firmware = shadow.get("firmware") or {}
    return [f"{channel}:{fw.get('version') or '?'}" for channel, fw in sorted(firmware.items())]


def _online(shadow: Mapping[str, Any]) -> str:
    online = _presence(shadow).get("online")
    return "unknown" if online is None else ("online" if online else "offline")


DEVICE_COLUMNS = (
    Column("device_id", lambda s: s["device_id"], key=True),
    Column("product_id", lambda s: s.get("product_id"), key=True),
    Column("name", lambda s: s.get("name")),
    Column("presence", _online),
    Column("last_seen", lambda s: millis(_presence(s).get("last_seen_ms"))),
    Column("owner_uid", lambda s: _binding(s).get("owner_uid")),
    Column("home_id", lambda s: _binding(s).get("home_id")),
    Column("dps", lambda s: len(s.get("dps") or {}), justify="right"),
    Column("firmware", _firmware_versions),
)

DP_COLUMNS = (
    Column("code", lambda dp: dp["code"]),
    Column("dp_id", lambda dp: dp.get("dp_id"), justify="right"),
    Column("value", lambda dp: dp.get("value")),
    Column("type", lambda dp: dp.get("type")),
    Column("device time", lambda dp: millis(dp.get("device_time_ms"))),
    Column("source", lambda dp: dp.get("source")),
)

FIRMWARE_COLUMNS = (
    Column("channel", lambda fw: fw["channel"], justify="right"),
    Column("version", lambda fw: fw.get("version")),
    Column("upgrade status", lambda fw: fw.get("upgrade_status"), justify="right"),
    Column("progress %", lambda fw: fw.get("progress_percent"), justify="right"),
)


def _client(ctx: typer.Context) -> ServiceClient:
    context = ctx.find_object(CliContext) or CliContext()
    return context.client(SERVICE)


@app.command("device")
@reports_errors
def device(
    ctx: typer.Context,
    device_id: Annotated[str, typer.Argument(help="Tuya device id.")],
    as_json: JsonOption = False,
) -> None:
    """One device's shadow: presence, binding, every DP with its device time, firmware per channel."""
    client = _client(ctx)
    try:
        shadow = client.get(f"/v1/devices/{device_id}/shadow")
    finally:
        client.close()
    if as_json:
        emit_json(shadow)
        return
    console = stdout()
    console.print(_summary(shadow))
    dps = sorted((shadow.get("dps") or {}).values(), key=lambda dp: (dp.get("dp_id") or 0, dp["code"]))
    console.print(table(DP_COLUMNS, dps, title="DPs") if dps else "no DPs reported yet")
    firmware = sorted((shadow.get("firmware") or {}).values(), key=lambda fw: fw["channel"])
    if firmware:
        console.print(table(FIRMWARE_COLUMNS, firmware, title="Firmware"))


def _summary(shadow: Mapping[str, Any]) -> Table:
    presence, binding = _presence(shadow), _binding(shadow)
    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold")
    summary.add_column()
    for label, value in (
        ("device", shadow["device_id"]),
        ("name", shadow.get("name")),
        ("product", shadow.get("product_id")),
        ("presence", f"{_online(shadow)} since {millis(presence.get('changed_at_ms')) or '?'}"),
        ("last seen", millis(presence.get("last_seen_ms"))),
        ("binding", binding.get("state")),
        ("owner", binding.get("owner_uid")),
        ("home", binding.get("home_id")),
        ("updated", shadow.get("updated_at")),
    ):
        summary.add_row(label, cell(value) or "-")
    return summary


@app.command("devices")
@reports_errors
def devices(
    ctx: typer.Context,
    product: Annotated[str | None, typer.Option("--product", help="Only this product (PID).")] = None,
    home: Annotated[str | None, typer.Option("--home", help="Only this home.")] = None,
    online: Annotated[
        bool | None, typer.Option("--online/--offline", help="Only online (or offline) devices.")
    ] = None,
    ids: IdsOption = None,
    limit: Annotated[int | None, typer.Option("--max", min=1, help="At most this many devices.")] = None,
    csv_out: CsvOption = None,
    as_json: JsonOption = False,
) -> None:
    """Shadows by product, home and presence (all pages), or those of the devices listed in `--ids`."""
    wanted = read_device_ids(ids) if ids is not None else None
    client = _client(ctx)
    missing: list[str] = []
    try:
        if wanted is not None:
            shadows = list(_by_id(client, wanted, missing))
        else:
            params: dict[str, Any] = {"limit": PAGE_SIZE}
            if product:
                params["product_id"] = product
            if home:
                params["home_id"] = home
            if online is not None:
                params["online"] = str(online).lower()
            shadows = list(client.pages("/v1/devices", params, limit=limit))
    finally:
        client.close()
    if as_json:
        emit_json(shadows)
    elif csv_out is not None:
        written = write_csv(csv_out, DEVICE_COLUMNS, shadows)
        if csv_out != "-":
            note(f"wrote {written} devices to {csv_out}")
    else:
        print_table(DEVICE_COLUMNS, shadows, title=f"{len(shadows)} devices")
    if missing:
        shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise CliError(f"no shadow for {len(missing)} of {len(wanted or [])} devices: {shown}")


def _by_id(client: ServiceClient, device_ids: list[str], missing: list[str]) -> Iterator[dict[str, Any]]:
    for device_id in device_ids:
        try:
            yield client.get(f"/v1/devices/{device_id}/shadow")
        except RequestFailed as exc:
            if exc.status != 404:
                raise
            missing.append(device_id)
