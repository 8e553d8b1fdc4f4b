"""`fleet-<service> api-key add|list|revoke`: one service's key store from its own console script.

A service's `__main__` adds the commands to its parser and runs them against its own database:

    add_api_key_commands(commands)  # commands = parser.add_subparsers(dest="command")
    ...
    if args.command == "api-key":
        database = settings.database
        run = api_key_command(
            args, settings, mongodb_uri=settings.mongodb_uri, database=database, app_name="fleet-status-cli"
        )
        raise SystemExit(asyncio.run(run))

`add` prints the new key alone on stdout (it is shown this once; only its sha256 is stored) and what was
issued on stderr, so `KEY=$(fleet-status api-key add ci)` captures just the key.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime, timedelta
from typing import TextIO

from fleet_shared import mongo

from .api_keys import ApiKey, ApiKeys
from .principal import ProductScope
from .settings import SecuritySettings
from .wiring import security_kit


def add_api_key_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = commands.add_parser("api-key", help="manage API keys").add_subparsers(dest="action", required=True)
    add = keys.add_parser("add", help="issue a new API key and print it once")
    add.add_argument("name", help="who or what holds the key (shown in the audit trail)")
    add.add_argument(
        "--role",
        action="append",
        dest="roles",
        metavar="ROLE",
        help="a role the key has (repeatable); default FLEET_API_KEY_DEFAULT_ROLE (viewer)",
    )
    add.add_argument(
        "--product",
        action="append",
        dest="products",
        metavar="PID",
        help="limit the key to this product (repeatable); default every product",
    )
    add.add_argument("--expires-in-days", type=float, metavar="DAYS", help="default: never expires")
    keys.add_parser("list", help="the stored keys, without their secrets")
    revoke = keys.add_parser("revoke", help="revoke a key by its id (as `list` shows it)")
    revoke.add_argument("key_id")


async def run_api_key_command(
    keys: ApiKeys,
    args: argparse.Namespace,
    *,
    default_role: str,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """Run `args.action` on the key store; the process's exit code."""
    if args.action == "add":
        if args.expires_in_days is not None and args.expires_in_days <= 0:
            print("--expires-in-days must be positive", file=err)
            return 2
        expires_at = (
            None if args.expires_in_days is None else datetime.now(UTC) + timedelta(days=args.expires_in_days)
        )
        scope = ProductScope.all() if not args.products else ProductScope.only(args.products)
        try:
            key, plaintext = await keys.issue(args.name, args.roles or [default_role], scope, expires_at)
        except ValueError as e:  # an unknown role, a bad name: nothing was stored
            print(str(e), file=err)
            return 2
        print(f"issued {describe(key)}", file=err)
        print(plaintext, file=out)
        return 0
    if args.action == "list":
        for key in await keys.list():
            print(describe(key), file=out)
        return 0
    if args.action == "revoke":
        if not await keys.revoke(args.key_id):
            print(f"no API key {args.key_id}", file=err)
            return 1
        print(f"revoked {args.key_id}", file=err)
        return 0
    raise ValueError(f"unknown api-key action {args.action!r}")


def describe(key: ApiKey) -> str:
    products = "every product" if key.scope.products is None else ",".join(sorted(key.scope.products))
    parts = [key.key_id, repr(key.name), "roles " + ",".join(key.roles), products]
    if key.expires_at is not None:
        parts.append(f"expires {key.expires_at.isoformat(timespec='seconds')}")
    if key.revoked_at is not None:
        parts.append(f"revoked {key.revoked_at.isoformat(timespec='seconds')}")
    if key.seeded:
        parts.append("seeded from the environment")
    return "  ".join(parts)


async def api_key_command(
    args: argparse.Namespace, settings: SecuritySettings, *, mongodb_uri: str, database: str, app_name: str
) -> int:
    """Run the command on the key store in `database`, prepared first (keys stored before the kit adopted,
    indexes) but not seeded: the environment's keys are the running service's business."""
    client = mongo.connect(mongodb_uri, app_name=app_name)
    kit = security_kit(settings, client[database])
    try:
        await kit.prepare()
        return await run_api_key_command(kit.api_keys, args, default_role=settings.api_key_default_role)
    finally:
        await kit.aclose()
        client.close()
