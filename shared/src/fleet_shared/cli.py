"""`fleet`: the operator CLI. Subcommand groups register themselves in `GROUPS` so services can add theirs.

    fleet tuya decode < message.json     # {"envelope": {...}, "pulsar_properties": {...}}

Exit codes: 0 success, 1 the input was rejected (`{"rejected": reason, "detail": ...}` on stdout), 2 usage.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import orjson

EXIT_OK = 0
EXIT_REJECTED = 1
EXIT_USAGE = 2

ENV_ACCESS_ID = "FLEET_TUYA_ACCESS_ID"
ENV_ACCESS_SECRET = "FLEET_TUYA_ACCESS_SECRET"  # noqa: S105 - the variable's name, not its value

# A group adds its subcommands to the parser it is given; each subcommand sets `handler` (args -> exit code).
GroupRegistrar = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]


class UsageError(Exception):
    pass


def _emit(out: TextIO, value: Any) -> None:
    out.write(orjson.dumps(value).decode() + "\n")
    out.flush()


# -- tuya -----------------------------------------------------------------------------------------------


def _tuya_decode(args: argparse.Namespace) -> int:
    from fleet_shared.tuya.codec import PushCodec
    from fleet_shared.tuya.errors import PushMessageRejected

    access_id = os.environ.get(ENV_ACCESS_ID, "")
    access_secret = os.environ.get(ENV_ACCESS_SECRET, "")
    if not access_id or not access_secret:
        raise UsageError(f"set {ENV_ACCESS_ID} and {ENV_ACCESS_SECRET}")
    try:
        codec = PushCodec(access_secret, verify_sign=args.verify_sign, max_message_bytes=args.max_bytes)
    except ValueError as exc:
        raise UsageError(f"{ENV_ACCESS_SECRET}: {exc}") from None
    raw = sys.stdin.buffer.read(args.max_bytes * 2 + 1)
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
        _emit(sys.stdout, {"rejected": exc.reason.value, "detail": exc.detail})
        return EXIT_REJECTED
    _emit(
        sys.stdout,
        {
            "protocol": decoded.protocol,
            "mode": decoded.mode.value,
            "data": decoded.data,
            "message": decoded.message.model_dump(mode="json"),
        },
    )
    return EXIT_OK


def register_tuya(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tuya = subparsers.add_parser("tuya", help="Tuya edge tools")
    commands = tuya.add_subparsers(dest="tuya_command", required=True, metavar="COMMAND")
    decode = commands.add_parser(
        "decode",
        help="decode one push message read from stdin",
        description=(
            'Reads {"envelope": {...}, "pulsar_properties": {...}} on stdin; credentials from '
            f"{ENV_ACCESS_ID} / {ENV_ACCESS_SECRET}."
        ),
    )
    decode.add_argument("--verify-sign", action="store_true", help="check the envelope md5 sign")
    decode.add_argument("--max-bytes", type=int, default=256 * 1024, help="message size limit")
    decode.set_defaults(handler=_tuya_decode)


GROUPS: list[GroupRegistrar] = [register_tuya]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fleet", description="tuya-fleet operator CLI")
    subparsers = parser.add_subparsers(dest="group", required=True, metavar="GROUP")
    for register in GROUPS:
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 on usage errors
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except UsageError as exc:
        sys.stderr.write(f"fleet: {exc}\n")
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
