"""MongoDB adapters: the `api_keys` and `audit` collections in the service's own database.

Single-document writes only. The audit adapter inserts and reads; it has no code that updates or deletes.
"""

from __future__ import annotations

import contextlib
import logging
import re
from datetime import datetime
from typing import Any

from motor.motor_asyncio import AsyncIOMotorCollection, AsyncIOMotorDatabase
from pymongo import ASCENDING, DESCENDING
from pymongo.errors import DuplicateKeyError

from fleet_shared.mongo import Document

from .api_keys import ApiKey
from .audit import AuditRecord
from .principal import ProductScope


def _key_document(key: ApiKey, key_hash: str) -> Document:
    return {
        "_id": key.key_id,
        "key_hash": key_hash,
        "name": key.name,
        "roles": list(key.roles),
        "products": key.scope.to_document(),
        "created_at": key.created_at,
        "expires_at": key.expires_at,
        "revoked_at": key.revoked_at,
        "last_used_at": key.last_used_at,
        "seeded": key.seeded,
    }


def _key_from_document(doc: Document) -> ApiKey:
    return ApiKey(
        key_id=doc["_id"],
        name=doc["name"],
        roles=tuple(doc.get("roles") or ()),
        scope=ProductScope.from_document(doc.get("products")),
        created_at=doc["created_at"],
        expires_at=doc.get("expires_at"),
        revoked_at=doc.get("revoked_at"),
        last_used_at=doc.get("last_used_at"),
        seeded=bool(doc.get("seeded", False)),
    )


log = logging.getLogger(__name__)
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")

# the hash is needed to find a key and never leaves this module
_WITHOUT_HASH: dict[str, Any] = {"key_hash": 0}


class MongoApiKeyStore:
    def __init__(self, db: AsyncIOMotorDatabase[Document], collection: str = "api_keys") -> None:
        self.keys: AsyncIOMotorCollection[Document] = db[collection]

    async def ensure_indexes(self) -> None:
        await self.keys.create_index([("key_hash", ASCENDING)], unique=True, name="key_hash_unique")

    async def adopt_legacy(self, default_role: str) -> int:
        """Give keys stored the way status stored them before this kit (`_id` = sha256 of the key, a name and
        created_at) the fields they lack; returns how many. Each is one conditional single-document update, so
        processes starting together adopt each key once. They keep the hash as their key id (it was already
        stored), get `default_role` and every product, and count as seeded (the environment may set their
        roles). Must run before `ensure_indexes`: the unique index cannot hold two documents without a
        hash."""
        adopted = 0
        async for doc in self.keys.find({"key_hash": {"$exists": False}}, {"_id": 1}):
            key_id = doc["_id"]
            if not (isinstance(key_id, str) and _SHA256_HEX.match(key_id)):
                log.warning("api_keys document %r is neither a key nor a legacy key; left alone", key_id)
                continue
            result = await self.keys.update_one(
                {"_id": key_id, "key_hash": {"$exists": False}},
                {
                    "$set": {
                        "key_hash": key_id,
                        "roles": [default_role],
                        "products": None,
                        "expires_at": None,
                        "revoked_at": None,
                        "last_used_at": None,
                        "seeded": True,
                    }
                },
            )
            adopted += result.modified_count
        return adopted

    async def insert(self, key: ApiKey, key_hash: str) -> bool:
        try:
            await self.keys.insert_one(_key_document(key, key_hash))
        except DuplicateKeyError:
            return False
        return True

    async def find_by_hash(self, key_hash: str) -> ApiKey | None:
        doc = await self.keys.find_one({"key_hash": key_hash}, _WITHOUT_HASH)
        return None if doc is None else _key_from_document(doc)

    async def list(self) -> list[ApiKey]:
        return [_key_from_document(d) async for d in self.keys.find({}, _WITHOUT_HASH).sort("_id", ASCENDING)]

    async def revoke(self, key_id: str, at: datetime) -> bool:
        result = await self.keys.update_one({"_id": key_id, "revoked_at": None}, {"$set": {"revoked_at": at}})
        if result.matched_count:
            return True
        return await self.keys.count_documents({"_id": key_id}, limit=1) > 0

    async def update_seeded(self, key_hash: str, name: str, roles: tuple[str, ...]) -> None:
        await self.keys.update_one(
            {"key_hash": key_hash, "seeded": True, "revoked_at": None},
            {"$set": {"name": name, "roles": list(roles)}},
        )

    async def touch(self, key_id: str, at: datetime) -> None:
        await self.keys.update_one({"_id": key_id}, {"$max": {"last_used_at": at}})


class MongoAuditLog:
    def __init__(self, db: AsyncIOMotorDatabase[Document], collection: str = "audit") -> None:
        self.records: AsyncIOMotorCollection[Document] = db[collection]

    async def ensure_indexes(self) -> None:
        await self.records.create_index([("at", DESCENDING)], name="at")
        await self.records.create_index([("who.subject", ASCENDING), ("at", DESCENDING)], name="subject_at")

    async def append(self, record: AuditRecord) -> None:
        # a retried insert of the same record finds it already there
        with contextlib.suppress(DuplicateKeyError):
            await self.records.insert_one(record.to_document())

    async def recent(
        self, *, subject: str | None = None, since: datetime | None = None, limit: int = 100
    ) -> list[AuditRecord]:
        query: Document = {}
        if subject is not None:
            query["who.subject"] = subject
        if since is not None:
            query["at"] = {"$gte": since}
        cursor = self.records.find(query).sort([("at", DESCENDING), ("_id", DESCENDING)]).limit(limit)
        return [AuditRecord.from_document(d) async for d in cursor]
