"""`fleet-tuya-sim serve | fleet create | run | truth`.

`serve` runs the simulated cloud (OpenAPI + control API + publisher); the other commands drive a running
one through its control API (`--url`, default `$FLEET_SIM_URL` or http://127.0.0.1:9010).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:9010"


def _serve(args: argparse.Namespace) -> int:
    from fleet_shared.service import prepare_process, run_service

    prepare_process()  # first: Motor sizes its thread pool on import (see fleet_shared.service.process)
    from fleet_tuya_sim.bootstrap import SERVICE, bootstrap
    from fleet_tuya_sim.entrypoints.app import create_app
    from fleet_tuya_sim.settings import SimSettings

    overrides: dict[str, Any] = {}
    if args.host:
        overrides["http_host"] = args.host
    if args.port:
        overrides["http_port"] = args.port
    if args.log_level:
        overrides["log_level"] = args.log_level
    run_service(SERVICE, SimSettings(**overrides), lambda settings: create_app(bootstrap(settings)))
    return 0


def _client(args: argparse.Namespace) -> httpx.Client:
    headers = {}
    token = os.environ.get("FLEET_SIM_CONTROL_TOKEN")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.Client(base_url=args.url, headers=headers, timeout=args.timeout)


def _print(response: httpx.Response) -> int:
    try:
        body = response.json()
    except ValueError:
        body = response.text
    print(json.dumps(body, indent=2, ensure_ascii=False))
    return 0 if response.is_success else 1


def _fleet_create(args: argparse.Namespace) -> int:
    body = {
        "seed": args.seed,
        "devices": args.devices,
        "homes": args.homes,
        "regions": args.regions.split(","),
        "unbound": args.unbound,
        "online_ratio": args.online_ratio,
    }
    if args.products:
        body["product_ids"] = args.products.split(",")
    with _client(args) as client:
        return _print(client.post("/sim/fleet", json=body))


def _run(args: argparse.Namespace) -> int:
    body = {
        "rate": args.rate,
        "duration_s": args.duration,
        "churn_rate": args.churn,
        "max_dps": args.max_dps,
        "malformed": args.malformed,
    }
    with _client(args) as client:
        response = client.post("/sim/scenario", json=body)
        if not response.is_success or not args.wait:
            return _print(response)
        client.post("/sim/scenario/wait", params={"timeout": args.duration + 60}, timeout=args.duration + 90)
        return _print(client.post("/sim/flush"))


def _truth(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if args.device:
            return _print(client.get(f"/sim/truth/devices/{args.device}"))
        return _print(client.get("/sim/truth", params={"messages": str(args.messages).lower()}))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fleet-tuya-sim", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the simulated Tuya cloud (settings from FLEET_SIM_* etc.)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--log-level", help="default: FLEET_SIM_LOG_LEVEL, FLEET_LOG_LEVEL or INFO")
    serve.set_defaults(handler=_serve)

    def remote(p: argparse.ArgumentParser) -> None:
        p.add_argument("--url", default=os.environ.get("FLEET_SIM_URL", DEFAULT_URL))
        p.add_argument("--timeout", type=float, default=60.0)

    fleet = sub.add_parser("fleet", help="fleet commands")
    fleet_sub = fleet.add_subparsers(dest="fleet_command", required=True)
    create = fleet_sub.add_parser("create", help="create (replace) the virtual fleet")
    remote(create)
    create.add_argument("--seed", type=int, default=1)
    create.add_argument("--devices", type=int, default=100)
    create.add_argument("--homes", type=int, default=10)
    create.add_argument("--regions", default="eu,us")
    create.add_argument("--products", default="", help="comma-separated product ids (default: all)")
    create.add_argument("--unbound", type=int, default=0)
    create.add_argument("--online-ratio", type=float, default=0.9)
    create.set_defaults(handler=_fleet_create)

    run = sub.add_parser("run", help="run a status scenario: reports at RATE/s for DURATION s, with churn")
    remote(run)
    run.add_argument("--rate", type=float, default=10.0)
    run.add_argument("--duration", type=float, default=10.0)
    run.add_argument("--churn", type=float, default=0.0, help="chance per device per second to flip presence")
    run.add_argument("--max-dps", type=int, default=2)
    run.add_argument("--malformed", type=int, default=0)
    run.add_argument("--no-wait", dest="wait", action="store_false")
    run.set_defaults(handler=_run)

    truth = sub.add_parser("truth", help="print the ground truth (JSON)")
    remote(truth)
    truth.add_argument("--device")
    truth.add_argument("--no-messages", dest="messages", action="store_false")
    truth.set_defaults(handler=_truth)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
