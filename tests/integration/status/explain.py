"""Whether the server answers a query from an index, by its own `explain`: MongoDB's winning plan, or the
local FerretDB's pushdown report with SQLite's query plan. Works unchanged against either server."""

from __future__ import annotations

from typing import Any

from motor.motor_asyncio import AsyncIOMotorDatabase

# MongoDB plan stages that read an index (anything else that touches documents is a collection scan)
_INDEX_STAGES = {"IXSCAN", "IDHACK", "EXPRESS_IXSCAN", "EXPRESS_CLUSTERED_IXSCAN", "EXPRESS_IDHACK"}


async def plan(
    db: AsyncIOMotorDatabase[Any],
    collection: str,
    filter_: dict[str, Any],
    *,
    sort: dict[str, int] | None = None,
    limit: int = 0,
) -> dict[str, Any]:
    find: dict[str, Any] = {"find": collection, "filter": filter_}
    if sort:
        find["sort"] = sort
    if limit:
        find["limit"] = limit
    reply: dict[str, Any] = await db.command("explain", find)
    return reply


def _stages(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["stage"]] if "stage" in node else []
        for value in node.values():
            found += _stages(value)
        return found
    if isinstance(node, list):
        return [s for item in node for s in _stages(item)]
    return []


def answered_from_index(reply: dict[str, Any], *, sorted_and_limited: bool = False) -> bool:
    """The query reads an index, never the whole collection; with `sorted_and_limited`, the server also
    sorts and limits there (a page of n reads about n documents, not every match)."""
    if "filterPushdown" in reply:  # the local FerretDB
        details = " ".join(str(row) for row in reply["queryPlanner"].get("Plan", []))
        indexed = bool(reply["filterPushdown"]) and "USING" in details and "INDEX" in details
        if sorted_and_limited:
            indexed = indexed and bool(reply["sortPushdown"]) and bool(reply["limitPushdown"])
            indexed = indexed and "TEMP B-TREE" not in details
        return indexed
    stages = _stages(reply["queryPlanner"]["winningPlan"])
    indexed = bool(set(stages) & _INDEX_STAGES) and "COLLSCAN" not in stages
    return indexed and (not sorted_and_limited or "SORT" not in stages)
