"""`fleet unbind`: unbind devices in batches through the unbinding service (`/v1/batches`).

    fleet unbind devices.csv [--reset] [--product PID] [--reason TEXT] [--key KEY] [--out results.csv]
    fleet unbind --qr --uid UID --ssid SSID [--home HOME] [--validity S] [--out results.csv]
        (the Wi-Fi password comes from FLEET_WIFI_PASSWORD or a hidden prompt)

A list is sent in batches of at most 1,000 devices; each batch gets a live progress bar whose label shows
the refusals grouped by cause as they happen, and every result is written back as CSV (`--out`, default
`<file>.results.csv`). A QR session prints the QR payload once (it holds the Wi-Fi password) and follows the
devices that scan it until the session ends.

Exit codes: 0 every device unbound, 1 some refused (see the CSV) or the service refused/unreachable, 2 usage.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import SecretStr

from fleet_shared.qr import terminal_text

from .errors import CliError, RequestFailed, UsageError, reports_errors
from .http import CliContext, ServiceClient, describe_failure
from .output import Column, Step, follow, note, read_device_ids, stdout, write_csv

SERVICE = "unbinding"
MAX_PER_BATCH = 1000
RESULT_COLUMNS = (
    Column("device_id", lambda r: r.get("device_id"), key=True),
    Column("product_id", lambda r: r.get("product_id")),
    Column("result", lambda r: r.get("result")),
    Column("cause", lambda r: r.get("cause")),
    Column("tuya_error_code", lambda r: r.get("tuya_error_code")),
    Column("detail", lambda r: r.get("detail")),
    Column("batch_id", lambda r: r.get("batch_id")),
    Column("at", lambda r: r.get("at")),
)

# one command, registered as a group so `fleet unbind FILE` reads naturally; options may follow the file
app = typer.Typer(
    help="Unbind strongly bound devices in batches (list, CSV or QR session).",
    context_settings={"allow_interspersed_args": True},
)


def _step(batch: Mapping[str, Any]) -> Step:
    causes = batch.get("refused_by_cause") or {}
    label = ", ".join(f"{cause} {n}" for cause, n in sorted(causes.items())) or ""
    status = batch.get("status")
    if status == "awaiting_approval":
        label = "waiting for a second administrator's approval"
    return Step(int(batch.get("done", 0)), batch.get("total"), status == "finished", label)


def _follow(client: ServiceClient, batch: Mapping[str, Any], what: str, timeout_s: float | None) -> None:
    follow(
        lambda: client.get(f"/v1/batches/{batch['batch_id']}"),
        _step,
        what=what,
        interval_s=0.5,
        timeout_s=timeout_s,
    )


def _summary(rows: list[Mapping[str, Any]], out: str) -> int:
    refused: dict[str, int] = {}
    for r in rows:
        if r.get("result") == "refused":
            refused[str(r.get("cause"))] = refused.get(str(r.get("cause")), 0) + 1
    unbound = sum(1 for r in rows if r.get("result") == "unbound")
    grouped = ", ".join(f"{c}: {n}" for c, n in sorted(refused.items()))
    stdout().print(
        f"unbound {unbound}, refused {sum(refused.values())}" + (f" ({grouped})" if grouped else "")
    )
    note(f"results written to {out}")
    return 0 if not refused else 1


@app.callback(invoke_without_command=True)
@reports_errors
def unbind(
    ctx: typer.Context,
    devices: Annotated[
        str | None, typer.Argument(help="CSV with a device_id column, or one id per line ('-': stdin).")
    ] = None,
    qr: Annotated[bool, typer.Option("--qr", help="Open a QR session instead of sending a list.")] = False,
    reset: Annotated[bool, typer.Option("--reset", help="Unbind and factory-reset.")] = False,
    product: Annotated[str | None, typer.Option("--product", help="Only devices of this product.")] = None,
    reason: Annotated[str | None, typer.Option("--reason", help="Why (kept with the batch).")] = None,
    key: Annotated[
        str | None, typer.Option("--key", help="Idempotency key: a rerun resumes the same batches.")
    ] = None,
    out: Annotated[
        str | None, typer.Option("--out", metavar="FILE|-", help="Where the results CSV goes.")
    ] = None,
    uid: Annotated[str | None, typer.Option("--uid", help="QR: your app account's uid.")] = None,
    home: Annotated[str | None, typer.Option("--home", help="QR: the home the token is issued for.")] = None,
    ssid: Annotated[str | None, typer.Option("--ssid", help="QR: the Wi-Fi the devices join.")] = None,
    validity: Annotated[
        float | None, typer.Option("--validity", help="QR: seconds the code stays valid.")
    ] = None,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="Stop following after this many seconds.")
    ] = None,
) -> None:
    obj: CliContext = ctx.obj or CliContext()
    if qr == (devices is not None):
        raise UsageError("give a device file, or --qr (not both)")
    client = obj.client(SERVICE)
    try:
        rows = (
            _run_qr(client, uid, home, ssid, validity, product, reason, timeout, obj.env)
            if qr
            else _run_list(client, devices or "-", reset, product, reason, key, timeout)
        )
    finally:
        client.close()
    target = out or (
        str(Path(devices).with_name(f"{Path(devices).stem}.results.csv"))
        if devices and devices != "-"
        else "-"
    )
    write_csv(target, RESULT_COLUMNS, rows)
    code = _summary(rows, target)
    if code:
        raise typer.Exit(code)


def _run_list(
    client: ServiceClient,
    source: str,
    reset: bool,
    product: str | None,
    reason: str | None,
    key: str | None,
    timeout: float | None,
) -> list[Mapping[str, Any]]:
    ids = read_device_ids(source)
    chunks = [ids[i : i + MAX_PER_BATCH] for i in range(0, len(ids), MAX_PER_BATCH)]
    rows: list[Mapping[str, Any]] = []
    for n, chunk in enumerate(chunks, start=1):
        body: dict[str, Any] = {"device_ids": chunk, "reset": reset, "product_id": product, "reason": reason}
        headers = {"Idempotency-Key": f"{key}:{n}"} if key else {}
        response = client.http.post("/v1/batches", json=body, headers=headers)
        if not response.is_success:
            raise RequestFailed(f"{SERVICE}: batch {n}: {describe_failure(response)}", response.status_code)
        batch = response.json()
        _follow(client, batch, f"batch {n}/{len(chunks)} ({len(chunk)} devices)", timeout)
        rows += client.get(f"/v1/batches/{batch['batch_id']}/results")
    return rows


def _run_qr(
    client: ServiceClient,
    uid: str | None,
    home: str | None,
    ssid: str | None,
    validity: float | None,
    product: str | None,
    reason: str | None,
    timeout: float | None,
    env: Mapping[str, str],
) -> list[Mapping[str, Any]]:
    if not uid or not ssid:
        raise UsageError("--qr needs --uid and --ssid")
    password = env.get("FLEET_WIFI_PASSWORD") or os.environ.get("FLEET_WIFI_PASSWORD")
    if password is None:
        password = typer.prompt("Wi-Fi password", hide_input=True)
    body = {
        "mode": "qr",
        "uid": uid,
        "home_id": home,
        "ssid": ssid,
        "password": password,
        "validity_s": validity,
        "product_id": product,
        "reason": reason,
    }
    batch = client.post("/v1/batches", body)
    payload = batch.get("qr_payload")
    if not payload:
        raise CliError("the service returned no QR payload")
    note("Show this QR code to the devices (it holds the Wi-Fi password; it is not shown again):")
    stdout().out(terminal_text(SecretStr(payload)), highlight=False)
    stdout().print(payload, markup=False, highlight=False)
    _follow(client, batch, "QR session", timeout)
    return list(client.get(f"/v1/batches/{batch['batch_id']}/results"))
