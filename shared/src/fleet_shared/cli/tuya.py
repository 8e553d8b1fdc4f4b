"""`fleet tuya`: Tuya edge tools.

    fleet tuya decode < message.json     # {"envelope": {...}, "pulsar_properties": {...}}

Exit codes: 0 decoded (JSON on stdout), 1 rejected (`{"rejected": reason, "detail": ...}` on stdout), 2 usage.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import orjson
import typer

from .errors import EXIT_OK, EXIT_REJECTED, UsageError, reports_errors
from .output import emit_json

ENV_ACCESS_ID = "FLEET_TUYA_ACCESS_ID"
ENV_ACCESS_SECRET = "FLEET_TUYA_ACCESS_SECRET"  # noqa: S105 - the variable's name, not its value

app = typer.Typer(help="Tuya edge tools.", no_args_is_help=True)


@app.command(
    help=(
        'Decode one push message. Reads {"envelope": {...}, "pulsar_properties": {...}} on stdin; '
        f"credentials from {ENV_ACCESS_ID} / {ENV_ACCESS_SECRET}."
    )
)
@reports_errors
def decode(
    verify_sign: Annotated[bool, typer.Option("--verify-sign", help="Check the envelope md5 sign.")] = False,
    max_bytes: Annotated[int, typer.Option("--max-bytes", help="Message size limit.")] = 256 * 1024,
) -> None:
    from fleet_shared.tuya.codec import PushCodec
    from fleet_shared.tuya.errors import PushMessageRejected

    access_id = os.environ.get(ENV_ACCESS_ID, "")
    access_secret = os.environ.get(ENV_ACCESS_SECRET, "")
    if not access_id or not access_secret:
        raise UsageError(f"set {ENV_ACCESS_ID} and {ENV_ACCESS_SECRET}")
    try:
        codec = PushCodec(access_secret, verify_sign=verify_sign, max_message_bytes=max_bytes)
    except ValueError as exc:
        raise UsageError(f"{ENV_ACCESS_SECRET}: {exc}") from None
    raw = sys.stdin.buffer.read(max_bytes * 2 + 1)
    try:
        request = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise UsageError("stdin must be one JSON object {envelope, pulsar_properties}") from None
    if not isinstance(request, dict) or not isinstance(request.get("envelope"), dict | str):
        raise UsageError("stdin must be one JSON object with an 'envelope' object")
    properties = request.get("pulsar_properties") or {}
    if not isinstance(properties, dict):
        raise UsageError("'pulsar_properties' must be an object")
    envelope = request["envelope"]
    if isinstance(envelope, dict):
        envelope = orjson.dumps(envelope)  # through the same strict, size-limited parse as the stream
    try:
        decoded = codec.decode(envelope, {str(k): str(v) for k, v in properties.items()})
    except PushMessageRejected as exc:
        emit_json({"rejected": exc.reason.value, "detail": exc.detail})
        raise typer.Exit(EXIT_REJECTED) from None
    emit_json(
        {
            "protocol": decoded.protocol,
            "mode": decoded.mode.value,
            "data": decoded.data,
            "message": decoded.message.model_dump(mode="json"),
        }
    )
    raise typer.Exit(EXIT_OK)
