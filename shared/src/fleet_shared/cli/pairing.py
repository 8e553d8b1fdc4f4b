"""`fleet pair`: pairing sessions from the pairing service's API (`/v1/pairing-sessions`).

    fleet pair --owner UID --home HOME [--mode EZ|AP|QR|BLE|combo] [--expect N] [--uuid UUID]
               [--allow PID ...] [--remove-unexpected] [--ssid SSID [--password-stdin]] [--key KEY]
               [--no-watch] [--timeout S] [--json]
    fleet pair show SESSION_ID [--json]
    fleet pair list [--owner UID] [--home HOME] [--state STATE] [--day YYYY-MM-DD] [--max N] [--csv FILE|-]
    fleet pair cancel SESSION_ID

Creating prints what the devices need (the QR code in the terminal for QR mode, the assembled token, the BLE
token), then follows the session: a progress bar toward the expected devices, failures with their causes as
they come, and the devices at the end. The Wi-Fi password is prompted for (hidden) or read from stdin, never
taken as an argument (shell history). Exit codes: 0 succeeded or partially, 1 any other end or an error, 2
usage.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Mapping
from typing import Annotated, Any

import typer
from pydantic import SecretStr

from fleet_shared.qr import terminal_text

from .errors import CliError, UsageError, reports_errors
from .http import CliContext, ServiceClient
from .output import (
    Column,
    CsvOption,
    JsonOption,
    Step,
    emit_json,
    follow,
    note,
    print_table,
    stdout,
    write_csv,
)

SERVICE = "pairing"
MODES = ("EZ", "AP", "QR", "BLE", "combo")
STATES = ("active", "succeeded", "partially_succeeded", "failed", "expired", "cancelled")
GOOD_ENDS = ("succeeded", "partially_succeeded")

app = typer.Typer(
    help="Pairing sessions: create one (QR in the terminal, devices joining live), show, list, cancel.",
    invoke_without_command=True,
)

DEVICE_COLUMNS = (
    Column("device", lambda d: d.get("device_id") or d["key"], key=True),
    Column("product_id", lambda d: d.get("product_id")),
    Column("outcome", lambda d: d["outcome"]),
    Column("code", lambda d: (d.get("failure") or {}).get("code")),
    Column("cause", lambda d: (d.get("failure") or {}).get("cause")),
    Column("previous owner", lambda d: d.get("previous_owner_uid")),
    Column("source", lambda d: d.get("source")),
)

SESSION_COLUMNS = (
    Column("session_id", lambda s: s["session_id"], key=True),
    Column("state", lambda s: s["state"]),
    Column("mode", lambda s: s["mode"]),
    Column("owner_uid", lambda s: s["owner_uid"]),
    Column("home_id", lambda s: s["home_id"]),
    Column("paired", lambda s: f"{s['counts']['paired']}/{s['expected_devices']}", justify="right"),
    Column("failed", lambda s: s["counts"]["failed"], justify="right"),
    Column("issued_at", lambda s: s["issued_at"]),
    Column("expires_at", lambda s: s["expires_at"]),
)


def _client(ctx: typer.Context) -> ServiceClient:
    context = ctx.find_object(CliContext) or CliContext()
    return context.client(SERVICE)


def qr_text(payload: str) -> str:
    """The QR code as terminal text (what a camera scans from the screen)."""
    return terminal_text(SecretStr(payload))


def progress_of(session: Mapping[str, Any]) -> Step:
    """Paired devices toward the expected count; failures by cause, as they come."""
    causes = Counter(
        (d.get("failure") or {}).get("cause") for d in session["devices"] if d["outcome"] == "failed"
    )
    label = ", ".join(f"{n}x {cause}" for cause, n in causes.most_common())
    extra = session["counts"]["unexpected_product"]
    if extra:
        label = ", ".join(filter(None, [label, f"{extra}x unexpected product"]))
    return Step(
        session["counts"]["paired"],
        session["expected_devices"],
        session["state"] != "active",
        f"{session['state']}{': ' + label if label else ''}",
    )


def _request_body(
    owner: str,
    home: str,
    mode: str,
    expect: int,
    uuid: str | None,
    allow: list[str] | None,
    remove_unexpected: bool,
    ssid: str | None,
    password: str | None,
    time_zone: str,
    key: str | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "owner_uid": owner,
        "home_id": home,
        "mode": mode,
        "time_zone_id": time_zone,
        "expected_devices": expect,
    }
    if uuid:
        body["device_uuids"] = [uuid]
    if allow:
        body["allowed_products"] = allow
        if remove_unexpected:
            body["unexpected_policy"] = "remove"
    if ssid is not None:
        body["wifi"] = {"ssid": ssid, "password": password or ""}
    if key:
        body["idempotency_key"] = key
    return body


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    value: str = typer.prompt("Wi-Fi password", hide_input=True, default="", show_default=False)
    return value


def _show_credentials(answer: Mapping[str, Any]) -> None:
    console = stdout()
    session = answer["session"]
    if answer.get("replayed"):
        note(f"session {session['session_id']} already exists for this key: no token is shown again")
        return
    qr = answer.get("qr")
    if qr:
        console.print("Scan this code with the camera:")
        console.out(qr_text(qr["payload"]), highlight=False)
    if answer.get("assembled_token"):
        console.print(f"token (for the device): {answer['assembled_token']}", highlight=False)
    if answer.get("ble_token"):
        console.print(f"BLE token: {answer['ble_token']}", highlight=False)
    console.print(f"session {session['session_id']}, token expires {session['expires_at']}")


@app.callback()
@reports_errors
def pair(
    ctx: typer.Context,
    owner: Annotated[str | None, typer.Option("--owner", help="Owner account (Tuya uid).")] = None,
    home: Annotated[str | None, typer.Option("--home", help="The owner's home the devices join.")] = None,
    mode: Annotated[str, typer.Option("--mode", help="EZ, AP, QR, BLE or combo.")] = "EZ",
    expect: Annotated[int, typer.Option("--expect", min=1, help="Devices expected (multi-device EZ).")] = 1,
    uuid: Annotated[str | None, typer.Option("--uuid", help="BLE / combo: the device uuid.")] = None,
    allow: Annotated[
        list[str] | None, typer.Option("--allow", help="Only this product may join (repeatable).")
    ] = None,
    remove_unexpected: Annotated[
        bool, typer.Option("--remove-unexpected", help="Remove devices outside --allow again.")
    ] = False,
    ssid: Annotated[str | None, typer.Option("--ssid", help="QR mode: the Wi-Fi network.")] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the Wi-Fi password from stdin (else a prompt).")
    ] = False,
    time_zone: Annotated[str, typer.Option("--time-zone", help="Time zone id.")] = "Etc/UTC",
    key: Annotated[str | None, typer.Option("--key", help="Idempotency key (a retry returns it).")] = None,
    watch: Annotated[bool, typer.Option("--watch/--no-watch", help="Follow the devices joining.")] = True,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="Stop following after S seconds.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Create a pairing session and follow the devices joining it."""
    if ctx.invoked_subcommand is not None:
        return
    if not owner or not home:
        raise UsageError(
            "--owner and --home are required to create a session (or: fleet pair list|show|cancel)"
        )
    if mode not in MODES:
        raise UsageError(f"--mode must be one of {', '.join(MODES)}")
    if (mode == "QR") != (ssid is not None):
        raise UsageError("QR mode takes --ssid (and the password, prompted); other modes take none")
    password = _read_password(password_stdin) if ssid is not None else None
    body = _request_body(
        owner, home, mode, expect, uuid, allow, remove_unexpected, ssid, password, time_zone, key
    )
    client = _client(ctx)
    try:
        answer = client.post("/v1/pairing-sessions", body)
        if as_json and not watch:
            emit_json(answer)
            return
        if not as_json:
            _show_credentials(answer)
        session_id = answer["session"]["session_id"]
        final = (
            follow(
                lambda: client.get(f"/v1/pairing-sessions/{session_id}"),
                progress_of,
                what=f"pairing {session_id}",
                timeout_s=timeout,
                show=not as_json,
            )
            if watch
            else answer["session"]
        )
    finally:
        client.close()
    _report(final, as_json)


def _report(session: Mapping[str, Any], as_json: bool) -> None:
    if as_json:
        emit_json(session)
    else:
        stdout().print(f"session {session['session_id']}: {session['state']}")
        if session["devices"]:
            print_table(DEVICE_COLUMNS, session["devices"], title="Devices")
        for hint in {(d.get("failure") or {}).get("hint") for d in session["devices"]} - {None}:
            note(str(hint))
    if session["state"] not in (*GOOD_ENDS, "active"):
        raise CliError(f"the session ended {session['state']}")


@app.command("show")
@reports_errors
def show(
    ctx: typer.Context,
    session_id: Annotated[str, typer.Argument(help="The session id (ps_...).")],
    as_json: JsonOption = False,
) -> None:
    """One session: state, timings, every device with its outcome and failure cause."""
    client = _client(ctx)
    try:
        session = client.get(f"/v1/pairing-sessions/{session_id}")
    finally:
        client.close()
    if as_json:
        emit_json(session)
        return
    print_table(SESSION_COLUMNS, [session])
    if session["devices"]:
        print_table(DEVICE_COLUMNS, session["devices"], title="Devices")


@app.command("list")
@reports_errors
def list_sessions(
    ctx: typer.Context,
    owner: Annotated[str | None, typer.Option("--owner", help="Only this owner (uid).")] = None,
    home: Annotated[str | None, typer.Option("--home", help="Only this home.")] = None,
    state: Annotated[str | None, typer.Option("--state", help=f"One of {', '.join(STATES)}.")] = None,
    day: Annotated[str | None, typer.Option("--day", help="UTC day opened, YYYY-MM-DD.")] = None,
    limit: Annotated[int, typer.Option("--max", min=1, help="At most this many sessions.")] = 50,
    csv_out: CsvOption = None,
    as_json: JsonOption = False,
) -> None:
    """Sessions, newest first."""
    if state is not None and state not in STATES:
        raise UsageError(f"--state must be one of {', '.join(STATES)}")
    params = {k: v for k, v in {"owner_uid": owner, "home_id": home, "state": state, "day": day}.items() if v}
    client = _client(ctx)
    try:
        rows = list(client.pages("/v1/pairing-sessions", {**params, "limit": min(limit, 200)}, limit=limit))
    finally:
        client.close()
    if as_json:
        emit_json(rows)
    elif csv_out is not None:
        write_csv(csv_out, SESSION_COLUMNS, rows)
    else:
        print_table(SESSION_COLUMNS, rows, title="Pairing sessions")


@app.command("cancel")
@reports_errors
def cancel(
    ctx: typer.Context, session_id: Annotated[str, typer.Argument(help="The session id (ps_...).")]
) -> None:
    """Stop the session (Tuya's stopConfig): its token is no longer honoured; late devices are flagged."""
    client = _client(ctx)
    try:
        session = client.post(f"/v1/pairing-sessions/{session_id}/cancel")
    finally:
        client.close()
    stdout().print(f"session {session['session_id']}: {session['state']}")
