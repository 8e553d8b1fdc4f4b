"""The `api_keys` collection: bearer API keys, stored as their sha256 only."""

from __future__ import annotations

import hashlib
from datetime import datetime

from motor.motor_asyncio import AsyncIOMotorCollection, AsyncIOMotorDatabase
from pymongo.errors import DuplicateKeyError

from fleet_status.ports import Document


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKeyStore:
    """Bearer API keys, stored as their sha256 only."""

    def __init__(self, db: AsyncIOMotorDatabase[Document]) -> None:
        self.keys: AsyncIOMotorCollection[Document] = db["api_keys"]

    async def add(self, name: str, key: str, now: datetime) -> bool:
        """Store a key; False if it was already there."""
        try:
            await self.keys.insert_one({"_id": hash_key(key), "name": name, "created_at": now})
        except DuplicateKeyError:
            return False
        return True

    async def name_of(self, key: str) -> str | None:
        doc = await self.keys.find_one({"_id": hash_key(key)})
        return None if doc is None else str(doc.get("name", ""))
