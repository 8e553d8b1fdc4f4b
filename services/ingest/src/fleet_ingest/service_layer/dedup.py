"""The duplicate decision for a message about to be published, in receive order."""

from __future__ import annotations

from collections import Counter
from typing import Literal

from fleet_ingest.domain.dedup import SeenWindow

#: Where a duplicate was recognised (the `source` label of the duplicates metric).
DuplicateSource = Literal["in_flight", "window", "store"]


def duplicate_source(
    key: str, *, in_flight: Counter[str], window: SeenWindow, seen_in_store: set[str], now: float
) -> DuplicateSource | None:
    """Where `key` is already known from, or None if its message is to be published.

    In flight: a send of it has started and is not confirmed yet. Window: confirmed recently by this
    process. Store: published before (by a previous process, or longer ago); it was looked up because the
    window missed it when it was received, and the window remembers it from now on.
    """
    if in_flight[key]:
        return "in_flight"
    if window.contains(key, now):
        return "window"
    if key in seen_in_store:
        window.add(key, now)
        return "store"
    return None
