"""`fleet trace ID`: the recent traces of a device, unbinding batch or OTA release, from the trace viewer, as
trees in the terminal (service, span, duration, status).

    fleet trace DEVICE_ID [--lookback 1h] [--limit 5] [--json]

The viewer's URL: `--zipkin URL`, else `FLEET_ZIPKIN_URL`, else the local stack's Zipkin. Spans are found by
their `fleet.device_id`, `fleet.batch_id` or `fleet.release_id` attribute.
Exit codes: 0 traces shown, 1 none found or the viewer unreachable, 2 usage.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

import httpx
import typer
from rich.text import Text
from rich.tree import Tree

from fleet_shared.tracing.zipkin import (
    SpanNode,
    ZipkinError,
    ZipkinQuery,
    failed,
    span_tree,
    started_us,
    zipkin_url,
)

from .errors import CliError, UsageError, reports_errors
from .http import CliContext
from .output import JsonOption, emit_json, stdout

_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def lookback_ms(text: str) -> int:
    """`90s`, `15m`, `2h`, `7d` -> milliseconds."""
    match = _DURATION.match(text.strip())
    if match is None or int(match.group(1)) == 0:
        raise UsageError(f"--lookback {text!r}: a positive number with s, m, h or d (e.g. 30m)")
    return int(match.group(1)) * _UNIT_MS[match.group(2)]


@reports_errors
def trace(
    ctx: typer.Context,
    entity_id: Annotated[str, typer.Argument(metavar="ID", help="A device, unbinding batch or release id.")],
    lookback: Annotated[str, typer.Option(help="How far back to look (s, m, h, d).")] = "1h",
    limit: Annotated[int, typer.Option(min=1, max=100, help="Most traces to show, newest first.")] = 5,
    zipkin: Annotated[str | None, typer.Option(help="The trace viewer's URL.")] = None,
    json: JsonOption = False,
) -> None:
    """Recent traces of a device, batch or release across every service, as trees."""
    if not _ID.match(entity_id):
        raise UsageError(f"{entity_id!r} is not a device, batch or release id")
    cli: CliContext = ctx.obj
    # a tag search over a busy in-memory viewer can take seconds
    http = httpx.Client(transport=cli.transport, timeout=30.0)
    query = ZipkinQuery(zipkin or zipkin_url(cli.env), http=http)
    try:
        traces = query.traces_of(entity_id, lookback_ms=lookback_ms(lookback), limit=limit)
    except ZipkinError as e:
        raise CliError(str(e)) from None
    finally:
        query.close()
    if json:
        emit_json(traces)
    if not traces:
        raise CliError(f"no traces of {entity_id} in the last {lookback} at {query.base_url}")
    if json:
        return
    console = stdout()
    for spans in traces:
        console.print(trace_tree(spans))


def trace_tree(spans: list[dict[str, Any]]) -> Tree:
    """One trace as a Rich tree: a header line, then every span under its parent."""
    began = datetime.fromtimestamp(started_us(spans) / 1e6, UTC)
    services = sorted({node.service for root in span_tree(spans) for node in root.walk()})
    header = Text.assemble(
        ("trace ", "bold"),
        (str(spans[0]["traceId"]), "bold cyan"),
        f"  {began:%Y-%m-%d %H:%M:%S.%f}"[:-3] + " UTC",
        f"  {len(spans)} spans  ",
        (", ".join(services), "magenta"),
    )
    tree = Tree(header)
    for root in span_tree(spans):
        _add(tree, root)
    return tree


def _add(parent: Tree, node: SpanNode) -> None:
    branch = parent.add(span_label(node))
    for child in node.children:
        _add(branch, child)


def span_label(node: SpanNode) -> Text:
    span = node.span
    duration_ms = int(span.get("duration") or 0) / 1000
    status = ("ERROR", "bold red") if failed(span) else ("ok", "green")
    return Text.assemble(
        (f"{node.service:<10}", "magenta"),
        " ",
        (str(span.get("name") or "?"), "bold"),
        f"  {duration_ms:.1f} ms  ",
        status,
    )
