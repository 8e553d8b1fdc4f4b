"""The root of `fleet`: every command group is registered here, in one place."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import typer

from . import ota, pairing, status, trace, tuya, unbinding
from .http import CliContext

# name -> the group's Typer app; a new service's group (pairing, unbinding, ota) is one line here
GROUPS: dict[str, typer.Typer] = {
    "tuya": tuya.app,
    "status": status.app,
    "pair": pairing.app,
    "unbind": unbinding.app,
    "ota": ota.app,
}

app = typer.Typer(
    name="fleet",
    help="tuya-fleet operator CLI.",
    no_args_is_help=True,
    add_completion=False,
    # a crash must not print local variables: they may hold access secrets or API keys
    pretty_exceptions_show_locals=False,
)


@app.callback()
def root(ctx: typer.Context) -> None:
    if ctx.obj is None:
        ctx.obj = CliContext()


for _name, _group in GROUPS.items():
    app.add_typer(_group, name=_name)
app.command("trace")(trace.trace)


def main(argv: Sequence[str] | None = None) -> int:
    """Run `fleet` with `argv` (default: the process's); the exit code."""
    try:
        app(args=list(argv) if argv is not None else sys.argv[1:], prog_name="fleet")
    except SystemExit as exit_:
        code = exit_.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0
