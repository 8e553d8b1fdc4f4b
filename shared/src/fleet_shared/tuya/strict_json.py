"""Strict JSON for untrusted input: RFC 8259 only (no NaN/Infinity, no lone surrogates, valid UTF-8), no
duplicate keys, bounded nesting. Errors are `StrictJsonError` with a message that never quotes the input.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


class StrictJsonError(ValueError):
    pass


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> None:
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise StrictJsonError("duplicate object key")
        seen.add(key)


def loads(raw: bytes | str) -> Any:
    """Parses strict JSON. orjson enforces the grammar; a second, allocation-light pass finds duplicate keys
    (orjson silently keeps the last one, and a duplicated `devId` is an attack, not a quirk)."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise StrictJsonError(f"invalid JSON at char {exc.pos}") from None
    except RecursionError:
        raise StrictJsonError("JSON nested too deeply") from None
    if isinstance(value, dict | list):
        try:
            json.loads(raw, object_pairs_hook=_reject_duplicates)
        except StrictJsonError:
            raise
        except (ValueError, RecursionError):
            raise StrictJsonError("invalid JSON") from None
    return value


def loads_object(raw: bytes | str) -> dict[str, Any]:
    value = loads(raw)
    if not isinstance(value, dict):
        raise StrictJsonError(f"JSON value is {type(value).__name__}, not an object")
    return value
