"""Unordered bulk writes of status's repositories: chunking, running chunks a few at a time, and tolerating
duplicates (a replayed insert)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from pymongo.errors import BulkWriteError

DUPLICATE_KEY = 11000


def chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def only_duplicates(error: BulkWriteError) -> bool:
    return all(e.get("code") == DUPLICATE_KEY for e in error.details.get("writeErrors", []))


def duplicate_indexes(error: BulkWriteError) -> set[int]:
    """Which statements of a bulk write failed on a duplicate key; re-raises if any failed otherwise."""
    if not only_duplicates(error) or error.details.get("writeConcernErrors"):
        raise error
    return {int(e["index"]) for e in error.details.get("writeErrors", [])}


async def in_chunks(
    items: Sequence[Any],
    write: Callable[[Sequence[Any]], Awaitable[Any]],
    *,
    size: int,
    concurrency: int,
) -> list[Any]:
    """Run `write` over chunks of `size` items, `concurrency` commands at a time; their results in order."""
    gate = asyncio.Semaphore(concurrency)

    async def one(chunk: Sequence[Any]) -> Any:
        async with gate:
            return await write(chunk)

    return list(await asyncio.gather(*(one(c) for c in chunks(items, size))))
