"""The durable half of de-duplication: dedup keys of published messages in MongoDB (`ingest` database).

One document per key, `_id` = `<access id>:<dedup key>` (unique by construction) with an `expires_at` field
and a TTL index on it, so the collection holds only what Tuya can still redeliver (it keeps unconsumed
messages for 2 hours). Servers without TTL indexes (FerretDB) get the same effect from `expire()`, which the
pipeline calls periodically. Writes are batched and idempotent (a key already there is not an error).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from motor.motor_asyncio import AsyncIOMotorDatabase
from pymongo import ASCENDING
from pymongo.errors import BulkWriteError, OperationFailure

log = logging.getLogger(__name__)

COLLECTION = "seen_messages"
_DUPLICATE_KEY = 11000


# keys per lookup query: few enough for any server to answer from its `_id` index in one go
LOOKUP_CHUNK = 500


class MongoDedupStore:
    def __init__(self, db: AsyncIOMotorDatabase[Any], *, access_id: str, ttl: timedelta) -> None:
        self._collection = db[COLLECTION]
        self._db = db
        self._prefix = f"{access_id}:"
        self._ttl = ttl
        self._server_expires = False

    async def setup(self) -> None:
        try:
            await self._collection.create_index([("expires_at", ASCENDING)], expireAfterSeconds=0)
            self._server_expires = True
        except OperationFailure as exc:
            log.info("no TTL index on this server (%s): expiring seen keys ourselves", exc.code)
            await self._collection.create_index([("expires_at", ASCENDING)])

    async def expire(self) -> None:
        if not self._server_expires:
            await self._collection.delete_many({"expires_at": {"$lt": datetime.now(UTC)}})

    async def seen(self, keys: Sequence[str]) -> set[str]:
        """The keys already recorded: one `{_id: {$in: [...]}}` query per `LOOKUP_CHUNK` keys.

        On MongoDB that is an `_id` index lookup per key in one round trip. The local FerretDB is built to do
        the same (`fleet_devstack.ferretdb_patch`; FerretDB 1.24 scanned the collection for `$in`) for up to
        1,000 keys: at 10k documents a 200-key `$in` takes ~10 ms. The pipeline's `LookupBatcher` keeps one
        lookup running at a time and folds what arrives meanwhile into the next one.
        """
        if not keys:
            return set()
        ids = [self._prefix + k for k in keys]
        found: set[str] = set()
        for start in range(0, len(ids), LOOKUP_CHUNK):
            chunk = ids[start : start + LOOKUP_CHUNK]
            async for doc in self._collection.find({"_id": {"$in": chunk}}, {"_id": 1}):
                found.add(str(doc["_id"])[len(self._prefix) :])
        return found

    async def record(self, keys: Sequence[str]) -> None:
        if not keys:
            return
        expires_at = datetime.now(UTC) + self._ttl
        docs = [{"_id": self._prefix + k, "expires_at": expires_at} for k in dict.fromkeys(keys)]
        try:
            await self._collection.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != _DUPLICATE_KEY for e in errors):
                raise

    async def ping(self) -> bool:
        await self._db.command("ping")
        return True


class InMemoryDedupStore:
    """The store's fake for unit tests (and a dedup store for a throwaway run)."""

    def __init__(self, keys: Iterable[str] = ()) -> None:
        self.keys: set[str] = set(keys)
        self.fail_lookups = False

    async def setup(self) -> None:
        return None

    async def seen(self, keys: Sequence[str]) -> set[str]:
        if self.fail_lookups:
            raise ConnectionError("dedup store unavailable")
        return self.keys.intersection(keys)

    async def record(self, keys: Sequence[str]) -> None:
        self.keys.update(keys)

    async def expire(self) -> None:
        return None

    async def ping(self) -> bool:
        return not self.fail_lookups
