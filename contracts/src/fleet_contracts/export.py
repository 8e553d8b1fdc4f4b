"""Write (or check) the committed JSON Schemas and the AsyncAPI document.

    uv run python -m fleet_contracts.export            # regenerate contracts/schemas/
    uv run python -m fleet_contracts.export --check    # exit 1 if the committed files are stale

One file per event type, `<type>.json` (its `$id` is the envelope's `dataschema`), plus `asyncapi.json`.
Regenerating refuses to overwrite a committed schema with a backward-incompatible one (see `compat`):
publish a new version of the type (`...v2`) instead, or pass `--allow-breaking` knowingly.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson

from fleet_contracts import asyncapi, compat, topics
from fleet_contracts.envelope import dataschema_for

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"
ASYNCAPI_FILE = "asyncapi.json"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def _dump(document: Any) -> bytes:
    return orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n"


def event_schemas() -> dict[str, dict[str, Any]]:
    """Event type -> JSON Schema of its envelope (validation mode: what consumers accept)."""
    out: dict[str, dict[str, Any]] = {}
    for event_type, cls in sorted(topics.envelope_classes().items()):
        schema = cls.model_json_schema(mode="validation")
        out[event_type] = {"$schema": JSON_SCHEMA_DIALECT, "$id": dataschema_for(event_type), **schema}
    return out


def render() -> dict[str, bytes]:
    """File name -> content, for every generated file."""
    files = {f"{event_type}.json": _dump(schema) for event_type, schema in event_schemas().items()}
    files[ASYNCAPI_FILE] = _dump(asyncapi.build_document())
    return files


def breaking_changes(directory: Path) -> dict[str, list[compat.Incompatibility]]:
    """Committed schema file -> its incompatibilities with the current contract (removed types included)."""
    current = event_schemas()
    problems: dict[str, list[compat.Incompatibility]] = {}
    for path in sorted(directory.glob("*.json")):
        if path.name == ASYNCAPI_FILE:
            continue
        event_type = path.name.removesuffix(".json")
        committed = orjson.loads(path.read_bytes())
        if event_type not in current:
            problems[path.name] = [
                compat.Incompatibility(
                    compat.ChangeKind.REMOVED_FIELD, "", f"event type {event_type} was removed"
                )
            ]
            continue
        found = compat.incompatibilities(committed, current[event_type])
        if found:
            problems[path.name] = found
    return problems


def stale_files(directory: Path) -> list[str]:
    """Names of files that differ from what `render()` produces, are missing, or are left over."""
    expected = render()
    stale = [name for name, content in expected.items() if _read(directory / name) != content]
    stale += [p.name for p in directory.glob("*.json") if p.name not in expected]
    return sorted(stale)


def _read(path: Path) -> bytes | None:
    return path.read_bytes() if path.exists() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fleet_contracts.export", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if committed files are stale")
    parser.add_argument(
        "--out", type=Path, default=SCHEMA_DIR, help=f"output directory (default {SCHEMA_DIR})"
    )
    parser.add_argument("--allow-breaking", action="store_true", help="overwrite incompatible schemas anyway")
    args = parser.parse_args(argv)
    directory: Path = args.out

    breaking = breaking_changes(directory) if directory.exists() else {}
    for name, found in breaking.items():
        for problem in found:
            print(f"{name}: {problem}", file=sys.stderr)

    if args.check:
        stale = stale_files(directory)
        for name in stale:
            print(f"stale: {directory / name}", file=sys.stderr)
        if stale:
            print("run `uv run python -m fleet_contracts.export` and commit the result", file=sys.stderr)
        return 1 if stale or breaking else 0

    if breaking and not args.allow_breaking:
        print("refusing to overwrite: backward-incompatible changes (add a new `.vN` type)", file=sys.stderr)
        return 1
    directory.mkdir(parents=True, exist_ok=True)
    expected = render()
    for leftover in directory.glob("*.json"):
        if leftover.name not in expected:
            leftover.unlink()
    for name, content in expected.items():
        if _read(directory / name) != content:
            (directory / name).write_bytes(content)
    print(f"wrote {len(expected)} files to {directory}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
