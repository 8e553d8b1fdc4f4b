"""Output every command group shares: `--json`, Rich tables, CSV out (`--csv FILE|-`), device ids from a CSV,
and a progress bar that follows a batch, release or session by polling its endpoint until it is done.

Tables and JSON go to stdout; progress bars and notes go to stderr, so stdout stays pipeable.
"""

from __future__ import annotations

import csv
import io
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TextIO

import orjson
import typer
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .errors import CliError, UsageError

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON on stdout instead of tables.")]
CsvOption = Annotated[
    str | None, typer.Option("--csv", metavar="FILE|-", help="Write the rows as CSV to FILE ('-': stdout).")
]
IdsOption = Annotated[
    str | None,
    typer.Option(
        "--ids",
        metavar="FILE|-",
        help="Device ids from a CSV with a device_id column, or one id per line ('-': stdin).",
    ),
]

DEVICE_ID_COLUMN = "device_id"
_DEVICE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def stdout() -> Console:
    return Console(file=sys.stdout, soft_wrap=False)


def stderr() -> Console:
    return Console(file=sys.stderr)


def emit_json(value: Any, out: TextIO | None = None) -> None:
    """One JSON document on one line."""
    target = out or sys.stdout
    target.write(orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode() + "\n")
    target.flush()


def note(message: str) -> None:
    """A line for the person at the terminal (stderr: never mixed into piped output)."""
    sys.stderr.write(message + "\n")


# -- rows: one column list feeds both the table and the CSV ------------------------------------------------


@dataclass(frozen=True)
class Column:
    header: str
    value: Callable[[Mapping[str, Any]], Any]
    justify: str = "left"
    key: bool = False  # an id people copy: shown whole on one line, other columns fold around it


def cell(value: Any) -> str:
    """A value as text: booleans yes/no, lists `a;b`, None empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ";".join(cell(v) for v in value)
    if isinstance(value, dict):
        return orjson.dumps(value).decode()
    return str(value)


def table(columns: Sequence[Column], rows: Iterable[Mapping[str, Any]], *, title: str | None = None) -> Table:
    rendered = Table(title=title, header_style="bold", box=box.SIMPLE_HEAD)
    for column in columns:
        rendered.add_column(
            column.header,
            justify=column.justify,  # type: ignore[arg-type]
            no_wrap=column.key,
            overflow="fold",
        )
    for row in rows:
        rendered.add_row(*(cell(column.value(row)) for column in columns))
    return rendered


def print_table(
    columns: Sequence[Column], rows: Iterable[Mapping[str, Any]], *, title: str | None = None
) -> None:
    stdout().print(table(columns, rows, title=title))


def write_csv(target: str, columns: Sequence[Column], rows: Iterable[Mapping[str, Any]]) -> int:
    """Rows as CSV (header first) to a file or, for '-', stdout; the number of rows written."""

    def write(out: TextIO) -> int:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([column.header for column in columns])
        count = 0
        for row in rows:
            writer.writerow([cell(column.value(row)) for column in columns])
            count += 1
        return count

    if target == "-":
        count = write(sys.stdout)
        sys.stdout.flush()
        return count
    try:
        with Path(target).open("w", newline="", encoding="utf-8") as out:
            return write(out)
    except OSError as exc:
        raise UsageError(f"cannot write {target}: {exc.strerror}") from None


def read_device_ids(source: str, *, column: str = DEVICE_ID_COLUMN) -> list[str]:
    """Device ids, in order and once each, from a CSV with a `device_id` column (others ignored) or from a
    plain list, one id per line. A malformed id is a usage error naming its line: nothing is asked."""
    if source == "-":
        text = sys.stdin.read()
    else:
        try:
            text = Path(source).read_text(encoding="utf-8-sig")
        except OSError as exc:
            raise UsageError(f"cannot read {source}: {exc.strerror}") from None
    rows = [row for row in csv.reader(io.StringIO(text)) if any(c.strip() for c in row)]
    if not rows:
        raise UsageError(f"{source}: no device ids")
    header = [c.strip() for c in rows[0]]
    if column in header:
        index, first = header.index(column), 2
        body = rows[1:]
    elif len(header) == 1:
        index, first = 0, 1
        body = rows
    else:
        raise UsageError(f"{source}: no '{column}' column (columns: {', '.join(header)})")
    ids: dict[str, None] = {}
    bad: list[int] = []
    for line, row in enumerate(body, start=first):
        value = row[index].strip() if index < len(row) else ""
        if not _DEVICE_ID.match(value):
            bad.append(line)
            continue
        ids.setdefault(value)
    if bad:
        shown = ", ".join(str(n) for n in bad[:10]) + (" ..." if len(bad) > 10 else "")
        raise UsageError(f"{source}: not a device id on line {shown}")
    if not ids:
        raise UsageError(f"{source}: no device ids")
    return list(ids)


def millis(ms: int | None) -> str | None:
    """Epoch milliseconds as UTC time to the second (`2026-11-29 11:42:11Z`)."""
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


# -- following a long-running operation -------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """Where an operation is: `completed` of `total` (None: not known yet), and whether it is over."""

    completed: int
    total: int | None
    done: bool
    label: str = ""


def progress_bars(*, show: bool = True) -> Progress:
    """Bars on stderr: description, bar, done of total, a `label` field, time elapsed."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[label]}"),
        TimeElapsedColumn(),
        console=stderr(),
        disable=not show,
    )


def follow(
    fetch: Callable[[], Mapping[str, Any]],
    read: Callable[[Mapping[str, Any]], Step],
    *,
    what: str,
    interval_s: float = 1.0,
    timeout_s: float | None = None,
    show: bool = True,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Mapping[str, Any]:
    """Poll `fetch` (e.g. `lambda: client.get(f"/v1/batches/{id}")`) every `interval_s` until `read` says
    done, with a progress bar on stderr; the last body. CliError if still not done after `timeout_s`."""
    deadline = None if timeout_s is None else clock() + timeout_s
    progress = progress_bars(show=show)
    with progress:
        task = progress.add_task(what, total=None, label="")
        while True:
            body = fetch()
            step = read(body)
            progress.update(task, completed=step.completed, total=step.total, label=step.label)
            if step.done:
                return body
            if deadline is not None and clock() >= deadline:
                raise CliError(f"{what}: not done after {timeout_s:.0f}s ({step.completed} of {step.total})")
            sleep(interval_s)
