"""How a `fleet` command fails: one line on stderr, an exit code operators can script on."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer

EXIT_OK = 0
EXIT_FAILED = 1  # the input was rejected, or a service refused or could not be reached
EXIT_REJECTED = EXIT_FAILED
EXIT_USAGE = 2  # wrong arguments or settings: nothing was asked of anything


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


class RequestFailed(CliError):
    """A service answered with an error status (`status`), or (status None) could not be reached."""

    def __init__(self, message: str, status: int | None) -> None:
        super().__init__(message)
        self.status = status


class UsageError(CliError):
    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_USAGE)


P = ParamSpec("P")
R = TypeVar("R")


def reports_errors(command: Callable[P, R]) -> Callable[P, R]:
    """`fleet: <message>` on stderr and the error's exit code, instead of a traceback."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except CliError as exc:
            sys.stderr.write(f"fleet: {exc}\n")
            raise typer.Exit(exc.code) from None

    return run
