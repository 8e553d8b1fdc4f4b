"""The generated part of docs/consumers.md: every topic and event type, from the topic registry.

    uv run python infra/docs/consumer_guide.py           # rewrite the generated section in place
    uv run python infra/docs/consumer_guide.py --check   # exit 1 if docs/consumers.md is out of date

Only the text between the two markers is generated; the rest of the guide is written by hand.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path
from typing import Any

from fleet_contracts import topics
from fleet_contracts.asyncapi import channel_id
from fleet_contracts.envelope import Envelope

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "consumers.md"
BEGIN = "<!-- generated:topics (infra/docs/consumer_guide.py; edit the topic registry, then rerun it) -->"
END = "<!-- /generated:topics -->"


def _own_doc(cls: Any) -> str | None:
    # only a class's own docstring says what *it* means; an inherited one describes its base
    doc = cls.__dict__.get("__doc__") if isinstance(cls, type) else None
    return inspect.cleandoc(doc).split("\n\n", 1)[0].replace("\n", " ") if doc else None


def meaning(envelope_cls: type[Envelope[Any]]) -> str:
    """What an event type means: its envelope's or its payload's own docstring (first paragraph)."""
    doc = _own_doc(envelope_cls) or _own_doc(envelope_cls.model_fields["data"].annotation)
    if doc:
        return doc
    # no docstring: say it from the type's own words, `ota.release.paused.v1` -> "Release paused."
    words = envelope_cls.event_type().split(".")[1:-1]
    return " ".join(words).replace("_", " ").capitalize() + "."


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render() -> str:
    lines = [
        BEGIN,
        "",
        "| Topic | Key (`data.` field) | tuya-fleet reads it with | Producer | Read inside tuya-fleet by | "
        "What it carries |",
        "|---|---|---|---|---|---|",
    ]
    for t in topics.ALL:
        readers = ", ".join(s.value for s in t.consumers) or "none"
        lines.append(
            f"| `{t.name}` | `{t.key.field}` | {t.subscription.value} | {t.producer.value} | {readers} | "
            f"{_cell(t.description)} |"
        )
    lines += ["", "| Event `type` | Topic (AsyncAPI channel) | Meaning |", "|---|---|---|"]
    where: dict[str, list[str]] = {}
    classes: dict[str, type[Envelope[Any]]] = {}
    for t in topics.ALL:
        for event_type, cls in t.envelope_classes().items():
            where.setdefault(event_type, []).append(channel_id(t))
            classes[event_type] = cls
    for event_type, cls in classes.items():
        channels = ", ".join(f"`{c}`" for c in where[event_type])
        lines.append(f"| `{event_type}` | {channels} | {_cell(meaning(cls))} |")
    lines += ["", END]
    return "\n".join(lines)


def updated(guide: str) -> str:
    """The guide with its generated section replaced by the current one."""
    start, end = guide.find(BEGIN), guide.find(END)
    if start < 0 or end < start:
        raise ValueError(f"{GUIDE} lacks the markers {BEGIN!r} ... {END!r}")
    return guide[:start] + render() + guide[end + len(END) :]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the guide is out of date")
    args = parser.parse_args(argv)
    current = GUIDE.read_text()
    fresh = updated(current)
    if args.check:
        if fresh != current:
            print(f"{GUIDE} is stale: run `uv run python infra/docs/consumer_guide.py`", file=sys.stderr)
            return 1
        return 0
    if fresh != current:
        GUIDE.write_text(fresh)
    print(GUIDE)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
