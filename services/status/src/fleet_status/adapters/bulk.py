"""Unordered bulk writes of status's repositories: chunking, and tolerating duplicates (a replayed insert)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from pymongo.errors import BulkWriteError

DUPLICATE_KEY = 11000


def chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def only_duplicates(error: BulkWriteError) -> bool:
    return all(e.get("code") == DUPLICATE_KEY for e in error.details.get("writeErrors", []))
