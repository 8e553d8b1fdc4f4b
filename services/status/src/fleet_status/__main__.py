"""`fleet-status`: run the status service, or manage its API keys.

fleet-status                      # serve (consume device events, HTTP API on FLEET_HTTP_PORT)
fleet-status api-key add NAME     # store a new key (sha256 only) and print it once
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
from datetime import UTC, datetime

import uvicorn

from fleet_shared import mongo
from fleet_shared.service import configure_logging, configure_tracing
from fleet_status.adapters.api_keys import ApiKeyStore
from fleet_status.bootstrap import SERVICE, bootstrap
from fleet_status.settings import StatusSettings


def serve(settings: StatusSettings) -> None:
    from fleet_status.entrypoints.app import create_app

    configure_logging(SERVICE, level=settings.log_level, fmt=settings.log_format)
    configure_tracing(SERVICE, otlp_endpoint=settings.otel_exporter_otlp_endpoint)
    app = create_app(bootstrap(settings))
    uvicorn.run(app, host=settings.http_host, port=settings.http_port, log_config=None, access_log=False)


async def add_api_key(settings: StatusSettings, name: str, key: str | None) -> str:
    key = key or secrets.token_urlsafe(32)
    client = mongo.connect(settings.mongodb_uri, app_name=f"fleet-{SERVICE}-cli")
    try:
        if not await ApiKeyStore(client[settings.status_database]).add(name, key, datetime.now(UTC)):
            raise SystemExit("that key is already stored")
    finally:
        client.close()
    return key


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="fleet-status", description=__doc__.splitlines()[0] if __doc__ else None
    )
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="run the service (the default)")
    keys = commands.add_parser("api-key", help="manage API keys").add_subparsers(dest="action", required=True)
    add = keys.add_parser("add", help="store a new API key and print it once")
    add.add_argument("name")
    add.add_argument("--key", help="use this key instead of a random one (read from stdin with '-')")
    args = parser.parse_args(argv)
    settings = StatusSettings()
    if args.command in (None, "serve"):
        serve(settings)
    elif args.command == "api-key":
        key = sys.stdin.readline().strip() if args.key == "-" else args.key
        print(asyncio.run(add_api_key(settings, args.name, key)))


if __name__ == "__main__":
    main()
