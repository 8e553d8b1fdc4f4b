"""`fleet-status`: run the status service, or manage its API keys.

fleet-status                                   # serve (consume device events, HTTP API on FLEET_HTTP_PORT)
fleet-status api-key add NAME [--role R] [--product PID] [--expires-in-days N]   # print a new key once
fleet-status api-key list                      # stored keys, without secrets
fleet-status api-key revoke KEY_ID
"""

from __future__ import annotations

import argparse
import asyncio

from fleet_shared.service import prepare_process, run_service


def main(argv: list[str] | None = None) -> None:
    prepare_process()  # first: Motor sizes its thread pool on import (see fleet_shared.service.process)
    from fleet_shared.security.cli import add_api_key_commands, api_key_command
    from fleet_status.bootstrap import SERVICE, bootstrap
    from fleet_status.entrypoints.app import create_app
    from fleet_status.settings import StatusSettings

    parser = argparse.ArgumentParser(
        prog="fleet-status", description=__doc__.splitlines()[0] if __doc__ else None
    )
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="run the service (the default)")
    add_api_key_commands(commands)
    args = parser.parse_args(argv)
    settings = StatusSettings()
    if args.command in (None, "serve"):
        run_service(SERVICE, settings, lambda s: create_app(bootstrap(s)))
    elif args.command == "api-key":
        run = api_key_command(
            args,
            settings,
            mongodb_uri=settings.mongodb_uri,
            database=settings.database,
            app_name=f"fleet-{SERVICE}-cli",
        )
        raise SystemExit(asyncio.run(run))


if __name__ == "__main__":
    main()
