"""The DP history (`dp_history`) and presence timeline (`presence_history`) collections.

History rows have deterministic ids, so a replayed report inserts nothing twice.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from motor.motor_asyncio import AsyncIOMotorCollection, AsyncIOMotorDatabase
from pymongo import ASCENDING, DESCENDING
from pymongo.errors import BulkWriteError, OperationFailure

from fleet_status.adapters.bulk import chunks, only_duplicates
from fleet_status.domain.shadow import AcceptedReading, PresenceReport
from fleet_status.ports import Document


class HistoryStore:
    """DP history (`dp_history`) and presence timeline (`presence_history`), kept `retention` long.

    Each row carries `expire_at` and a TTL index removes it where the server supports TTL; every query also
    filters on time, so expiry holds even where it does not (FerretDB 1.x).
    """

    def __init__(self, db: AsyncIOMotorDatabase[Document], *, retention: timedelta) -> None:
        self.dp_history: AsyncIOMotorCollection[Document] = db["dp_history"]
        self.presence_history: AsyncIOMotorCollection[Document] = db["presence_history"]
        self.retention = retention

    async def ensure_indexes(self) -> None:
        for collection in (self.dp_history, self.presence_history):
            # no TTL on this server: the time filter of every query keeps expiry honest
            with contextlib.suppress(OperationFailure):
                await collection.create_index("expire_at", expireAfterSeconds=0)
        await self.dp_history.create_index([("device_id", ASCENDING), ("code", ASCENDING), ("t", DESCENDING)])
        await self.presence_history.create_index([("device_id", ASCENDING), ("t", DESCENDING)])

    def _expiry(self, device_time_ms: int) -> datetime:
        return datetime.fromtimestamp(device_time_ms / 1000, UTC) + self.retention

    def oldest_kept_ms(self, now: datetime) -> int:
        return int((now - self.retention).timestamp() * 1000)

    async def add(
        self,
        readings: Mapping[str, Sequence[AcceptedReading]],
        presence: Mapping[str, Sequence[PresenceReport]],
        now: datetime,
    ) -> None:
        oldest = self.oldest_kept_ms(now)
        dp_rows = [
            {
                "_id": f"{device_id}|{r.code}|{r.device_time_ms}",
                "device_id": device_id,
                "code": r.code,
                "dp_id": r.dp_id,
                "value": r.value,
                "raw": r.raw,
                "t": r.device_time_ms,
                "expire_at": self._expiry(r.device_time_ms),
            }
            for device_id, rs in readings.items()
            for r in rs
            if r.device_time_ms >= oldest
        ]
        presence_rows = [
            {
                "_id": f"{device_id}|{p.device_time_ms}|{int(p.online)}",
                "device_id": device_id,
                "online": p.online,
                "t": p.device_time_ms,
                "expire_at": self._expiry(p.device_time_ms),
            }
            for device_id, ps in presence.items()
            for p in ps
            if p.device_time_ms >= oldest
        ]
        for collection, rows in ((self.dp_history, dp_rows), (self.presence_history, presence_rows)):
            # the same report twice has the same id: a replay inserts nothing
            for chunk in chunks(rows, 1000):
                try:
                    await collection.insert_many(list(chunk), ordered=False)
                except BulkWriteError as e:
                    if not only_duplicates(e):
                        raise

    async def dp_history_page(
        self,
        device_id: str,
        code: str | None,
        *,
        since_ms: int,
        until_ms: int,
        before: tuple[int, str] | None,
        limit: int,
        now: datetime,
    ) -> list[Document]:
        extra: Document = {} if code is None else {"code": code}
        return await self._timeline_page(
            self.dp_history,
            device_id,
            extra,
            since_ms=since_ms,
            until_ms=until_ms,
            before=before,
            limit=limit,
            now=now,
        )

    async def presence_page(
        self,
        device_id: str,
        *,
        since_ms: int,
        until_ms: int,
        before: tuple[int, str] | None,
        limit: int,
        now: datetime,
    ) -> list[Document]:
        return await self._timeline_page(
            self.presence_history,
            device_id,
            {},
            since_ms=since_ms,
            until_ms=until_ms,
            before=before,
            limit=limit,
            now=now,
        )

    async def _timeline_page(
        self,
        collection: Any,
        device_id: str,
        extra: Document,
        *,
        since_ms: int,
        until_ms: int,
        before: tuple[int, str] | None,
        limit: int,
        now: datetime,
    ) -> list[Document]:
        """Newest first, never older than the retention window, continuing after the `before` cursor."""
        filter_: Document = {
            "device_id": device_id,
            "t": {"$gte": max(since_ms, self.oldest_kept_ms(now)), "$lte": until_ms},
            **extra,
        }
        if before is not None:
            t, row_id = before
            filter_["$or"] = [{"t": {"$lt": t}}, {"t": t, "_id": {"$lt": row_id}}]
        cursor = collection.find(filter_).sort([("t", DESCENDING), ("_id", DESCENDING)]).limit(limit)
        return [doc async for doc in cursor]
