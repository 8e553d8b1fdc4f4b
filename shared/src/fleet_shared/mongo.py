"""MongoDB access shared by every service: one client per process, the upsert that survives races, and the
removal of relayed outbox entries.

Only single-document atomic operations are used (no multi-document transactions, no change streams), so the
same code runs on MongoDB in production and on the MongoDB-wire server used locally.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from motor.motor_asyncio import AsyncIOMotorClient, AsyncIOMotorCollection
from pymongo import ReturnDocument, UpdateOne
from pymongo.errors import ConnectionFailure, DuplicateKeyError, ExecutionTimeout, PyMongoError, WTimeoutError

from fleet_shared.tracing.mongo import CommandTracer

Document = dict[str, Any]

# Two concurrent upserts for a missing document may both try to insert it; one fails with a duplicate key.
# The loser's retry then finds the winner's document and updates it. A few tries are always enough: after the
# first insert succeeds, the document exists.
_UPSERT_TRIES = 5


def connect(uri: str, *, app_name: str, timeout_ms: int = 5000) -> AsyncIOMotorClient[Document]:
    """A client for one service process: tz-aware datetimes (UTC), bounded waits, majority writes, and a
    database span for each command run inside a trace."""
    return AsyncIOMotorClient(
        uri,
        appname=app_name,
        tz_aware=True,
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
        w="majority",
        retryWrites=True,
        retryReads=True,
        event_listeners=[CommandTracer()],
    )


def is_transient(error: BaseException) -> bool:
    """Whether a database error is an outage (server down, restarting, failing over, timing out) that a retry
    of the same operation will get past, rather than a problem with the operation itself.

    Callers keep their input and retry such errors instead of rejecting it: a database restart must not turn
    good messages into dead letters.
    """
    # ConnectionFailure covers AutoReconnect (network errors, server selection timeouts, not primary)
    if isinstance(error, ConnectionFailure | ExecutionTimeout | WTimeoutError):
        return True
    return isinstance(error, PyMongoError) and error.has_error_label("RetryableWriteError")


async def find_one_and_upsert(
    collection: AsyncIOMotorCollection[Document],
    filter: Mapping[str, Any],
    update: Mapping[str, Any],
) -> Document:
    """Atomically update the matching document, creating it if missing; returns the document after the update.

    Safe under any number of concurrent callers with the same filter (the filter must be on a unique key,
    such as `_id`): exactly one creates the document and every caller's update applies exactly once.
    """
    for attempt in range(_UPSERT_TRIES):
        try:
            doc: Document | None = await collection.find_one_and_update(
                filter, update, upsert=True, return_document=ReturnDocument.AFTER
            )
        except DuplicateKeyError:
            if attempt == _UPSERT_TRIES - 1:
                raise
            continue
        if doc is None:  # cannot happen with upsert=True and AFTER; guards a misbehaving server
            raise RuntimeError(f"upsert on {collection.full_name} returned no document")
        return doc
    raise AssertionError("unreachable")


class OutboxItem(Protocol):
    """An entry of a document's `outbox` array (`fleet_contracts.outbox.OutboxEntry`, or a service's own)."""

    def to_document(self) -> Document: ...


def pull_relayed(entries: Iterable[OutboxItem]) -> Document:
    """The update that removes exactly these relayed entries from a document's `outbox`, whatever the
    document's version now is (entries appended since stay). `$pullAll` matches whole entries: FerretDB 1.x
    ignores `$pull` with a condition."""
    return {"$pullAll": {"outbox": [e.to_document() for e in entries]}}


async def clear_relayed(
    collection: AsyncIOMotorCollection[Document], relayed: Iterable[tuple[Any, Sequence[OutboxItem]]]
) -> None:
    """`pull_relayed` for several documents (id, entries) in one command: one single-document update each,
    filtered on `_id` alone, which FerretDB 1.x answers from its index (any other filter scans)."""
    updates = [UpdateOne({"_id": doc_id}, pull_relayed(entries)) for doc_id, entries in relayed if entries]
    if updates:
        await collection.bulk_write(updates, ordered=False)
