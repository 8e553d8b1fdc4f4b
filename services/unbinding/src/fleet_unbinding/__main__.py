"""`fleet-unbinding`: run the unbinding service, or manage its API keys.

fleet-unbinding                                # serve (HTTP API on FLEET_HTTP_PORT, batch workers, relay)
fleet-unbinding api-key add NAME [--role R]    # store a new key (sha256 only) and print it once; NAME is
                                               # the account it acts as
"""

from __future__ import annotations

import argparse
import asyncio
from typing import TYPE_CHECKING

from fleet_shared.service import prepare_process, run_service

if TYPE_CHECKING:
    from fleet_unbinding.settings import UnbindingSettings


def serve(settings: UnbindingSettings) -> None:
    from fleet_unbinding.bootstrap import SERVICE, bootstrap
    from fleet_unbinding.entrypoints.app import create_app

    run_service(SERVICE, settings, lambda s: create_app(bootstrap(s)))


async def add_api_key(settings: UnbindingSettings, name: str, roles: list[str]) -> str:
    from fleet_shared import mongo
    from fleet_shared.security import security_kit
    from fleet_unbinding.bootstrap import SERVICE

    client = mongo.connect(settings.mongodb_uri, app_name=f"fleet-{SERVICE}-cli")
    try:
        kit = security_kit(settings, client[settings.database])
        await kit.prepare()
        _, key = await kit.api_keys.issue(name, roles or [settings.api_key_default_role])
        return key
    finally:
        await kit.aclose()
        client.close()


def main(argv: list[str] | None = None) -> None:
    prepare_process()  # first: Motor sizes its thread pool on import (see fleet_shared.service.process)
    from fleet_unbinding.settings import UnbindingSettings

    parser = argparse.ArgumentParser(prog="fleet-unbinding", description=(__doc__ or "").splitlines()[0])
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="run the service (the default)")
    keys = commands.add_parser("api-key", help="manage API keys").add_subparsers(dest="action", required=True)
    add = keys.add_parser("add", help="store a new API key and print it once")
    add.add_argument("name", help="the account the key acts as")
    add.add_argument("--role", action="append", default=[], help="a role (repeatable): operator, admin, ...")
    args = parser.parse_args(argv)
    settings = UnbindingSettings()
    if args.command in (None, "serve"):
        serve(settings)
    elif args.command == "api-key":
        print(asyncio.run(add_api_key(settings, args.name, args.role)))


if __name__ == "__main__":
    main()
