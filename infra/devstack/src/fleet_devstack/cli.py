"""`devstack up|down|status|logs|env|install [--stack NAME]`: the justfile's recipes call this."""

from __future__ import annotations

import argparse
import shlex
import sys

from .process import StackError
from .stack import LocalStack


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="devstack", description=__doc__)
    parser.add_argument("command", choices=["install", "up", "down", "status", "logs", "env", "provision"])
    parser.add_argument("--stack", default=None, help="stack name: dev (default, FLEET_STACK) or test")
    parser.add_argument("--lines", type=int, default=40, help="log lines per server for `logs`")
    parser.add_argument("--no-services", action="store_true", help="`up`: only the servers, not our services")
    args = parser.parse_args(argv)
    stack = LocalStack.from_env(args.stack)
    try:
        return _COMMANDS[args.command](stack, args)
    except StackError as err:
        print(f"devstack: {err}", file=sys.stderr)
        return 1


def _install(stack: LocalStack, _: argparse.Namespace) -> int:
    stack.install()
    return 0


def _up(stack: LocalStack, args: argparse.Namespace) -> int:
    timings = stack.up(with_services=not args.no_services)
    print(
        f"stack '{stack.config.name}' up in {timings['total']:.1f}s "
        f"(install {timings['install']:.1f}s, start {timings['start']:.1f}s)"
    )
    for what, where in stack.endpoints():
        print(f"  {what:<28} {where}")
    print(f"  {'data and logs':<28} {stack.config.stack_dir}")
    return 0


def _down(stack: LocalStack, _: argparse.Namespace) -> int:
    stopped = ", ".join(stack.down()) or "nothing (was not running)"
    print(f"stack '{stack.config.name}': stopped {stopped}")
    return 0


def _status(stack: LocalStack, _: argparse.Namespace) -> int:
    print(f"stack '{stack.config.name}' in {stack.config.stack_dir}")
    all_healthy = True
    for server in stack.servers():
        pid = server.process.pid()
        healthy = pid is not None and server.healthy()
        all_healthy &= healthy
        rss = server.process.rss_mib()
        state = "healthy" if healthy else ("running, not healthy" if pid else "stopped")
        memory = f", RSS {rss:.0f} MiB" if rss else ""
        print(f"  {server.name:<9} {state} (pid {pid}, ports {server.ports()}{memory})")
    return 0 if all_healthy else 3


def _logs(stack: LocalStack, args: argparse.Namespace) -> int:
    for server in stack.servers():
        print(f"==> {server.process.log_file} <==")
        print(server.process.tail(args.lines))
    broker_log = stack.pulsar.home / "logs" / "pulsar.log"
    if broker_log.exists():
        print(f"==> {broker_log} <==")
        print("\n".join(broker_log.read_text(errors="replace").splitlines()[-args.lines :]))
    return 0


def _env(stack: LocalStack, _: argparse.Namespace) -> int:
    for key, value in stack.config.client_env().items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


def _provision(stack: LocalStack, _: argparse.Namespace) -> int:
    stack.provision()
    return 0


_COMMANDS = {
    "install": _install,
    "up": _up,
    "down": _down,
    "status": _status,
    "logs": _logs,
    "env": _env,
    "provision": _provision,
}

if __name__ == "__main__":
    sys.exit(main())
