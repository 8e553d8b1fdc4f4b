"""DP history and presence timeline: one document per device and hour (the bucket pattern).

A report costs no document of its own: it is appended with `$push` to its device's bucket for the hour of its
device time (the first report of an hour inserts the bucket). The append is conditional on none of the
reports' keys being in the bucket yet, so a replayed report adds nothing.

Bucket ids are `<hour, 13 digits>|<device id>`:
- a page of one device's history reads the buckets of the hours it covers by `_id` (`$in`), newest hours
  first, and stops once the page is full;
- retention deletes whole buckets older than the window by an `_id` range, in bounded batches; where the
  server has TTL indexes (MongoDB) the `expire_at` TTL index does it instead. Pages also filter on time, so a
  bucket waiting for deletion never shows.
Both are answered from the `_id` index, on MongoDB and on the local FerretDB build (whose patch pushes `_id`
`$in` and string ranges down to SQLite).

Reports reach the buckets from the journal in their device's shadow (`domain/journal.py`): the writer moves a
journal here with `add` now and then, and only then clears it. So a page reads the device's journal first
(one read of its shadow by `_id`), then the buckets, and counts a row found in both once (a crash between a
move's two writes, or a replay journaled again after its move): whatever a move does between the two reads,
every row is in one of them.

Migration: the per-report collections of earlier versions (`dp_history`, `presence_history`) are not read.
They are dropped by the sweep once the retention window has passed since this layout first ran (they are kept
until then for a rollback); on MongoDB their TTL index empties them meanwhile.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from motor.motor_asyncio import AsyncIOMotorCollection, AsyncIOMotorDatabase
from pymongo import UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure

from fleet_status.adapters.bulk import chunks, duplicate_indexes, in_chunks
from fleet_status.domain.journal import HOUR_MS, hour_of
from fleet_status.domain.shadow import AcceptedReading, PresenceReport
from fleet_status.ports import Document

log = logging.getLogger(__name__)

__all__ = ["HOUR_MS", "HistoryStore", "bucket_id", "dp_row", "hour_of", "journal_rows", "presence_row"]

SHADOWS = "shadows"  # the collection whose documents hold the journals (`adapters/shadows.py`)
# device clocks ahead of the server by more than this are broken: such reports update the shadow, not history
MAX_AHEAD_MS = 86_400_000
LEGACY_COLLECTIONS = ("dp_history", "presence_history")
# a history page reads 1, 2, 4, ... hours of buckets per query, newest first, until the page is full
_MAX_WINDOW_HOURS = 32
# a bucket whose append raced with a replay or another writer is merged again this many times at most
_APPEND_ATTEMPTS = 3


def bucket_id(device_id: str, hour_ms: int) -> str:
    # the hour first: retention deletes an `_id` range; zero padded, so string order is time order
    return f"{hour_ms:013d}|{device_id}"


@dataclass(slots=True)
class _Bucket:
    """What one flush appends to one device's hour."""

    device_id: str
    hour_ms: int
    dps: list[Document] = field(default_factory=list)
    presence: list[Document] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)

    def add(self, key: str, section: list[Document], row: Document) -> None:
        if key not in self.keys:  # the same report twice in one batch
            self.keys.append(key)
            section.append(row)

    def without(self, present: set[str]) -> _Bucket:
        """The part of this append not yet in the stored bucket."""
        rest = _Bucket(self.device_id, self.hour_ms)
        for section, rows, key_of in (
            (rest.dps, self.dps, _dp_key),
            (rest.presence, self.presence, _presence_key),
        ):
            for row in rows:
                key = key_of(row)
                if key not in present:
                    rest.add(key, section, row)
        return rest


def dp_row(r: AcceptedReading) -> Document:
    """A DP report as history stores it (in a bucket, and in a shadow's journal)."""
    return {"code": r.code, "dp_id": r.dp_id, "value": r.value, "raw": r.raw, "t": r.device_time_ms}


def presence_row(p: PresenceReport) -> Document:
    return {"online": p.online, "t": p.device_time_ms}


def _dp_key(row: Document) -> str:
    return f"d{row['t']}|{row['code']}"


def _presence_key(row: Document) -> str:
    return f"p{row['t']}|{int(row['online'])}"


class HistoryStore:
    """DP history and presence timeline in hourly buckets (`history_buckets`), kept `retention` long."""

    def __init__(
        self,
        db: AsyncIOMotorDatabase[Document],
        *,
        retention: timedelta,
        write_chunk: int = 16,
        write_concurrency: int = 4,
    ) -> None:
        self.db = db
        self.buckets: AsyncIOMotorCollection[Document] = db["history_buckets"]
        self.meta: AsyncIOMotorCollection[Document] = db["history_meta"]
        self.shadows: AsyncIOMotorCollection[Document] = db[SHADOWS]
        self.retention = retention
        self.write_chunk = write_chunk
        self.write_concurrency = write_concurrency
        # whether the server deletes expired buckets itself (a TTL index took); else `sweep` does
        self.server_expires = False

    async def ensure_indexes(self, now: datetime | None = None) -> None:
        # FerretDB 1.x refuses TTL options: detect what the server really built, never assume
        with contextlib.suppress(OperationFailure):
            await self.buckets.create_index("expire_at", expireAfterSeconds=0)
        indexes = await self.buckets.index_information()
        self.server_expires = any(
            "expireAfterSeconds" in spec and spec.get("key") == [("expire_at", 1)]
            for spec in indexes.values()
        )
        await self._note_legacy(now or datetime.now(UTC))

    async def _note_legacy(self, now: datetime) -> None:
        """Remember when the per-report collections of earlier versions may go (see the module docstring)."""
        names = set(await self.db.list_collection_names())
        if names.isdisjoint(LEGACY_COLLECTIONS):
            return
        drop_after = now + self.retention + timedelta(milliseconds=MAX_AHEAD_MS)
        await self.meta.update_one(
            {"_id": "legacy"}, {"$setOnInsert": {"drop_after": drop_after}}, upsert=True
        )

    def oldest_kept_ms(self, now: datetime) -> int:
        return int((now - self.retention).timestamp() * 1000)

    def _expiry(self, hour_ms: int) -> datetime:
        return datetime.fromtimestamp((hour_ms + HOUR_MS) / 1000, UTC) + self.retention

    # --- writing -----------------------------------------------------------------------------------------

    async def add(
        self,
        readings: Mapping[str, Sequence[AcceptedReading]],
        presence: Mapping[str, Sequence[PresenceReport]],
        now: datetime,
    ) -> None:
        oldest = self.oldest_kept_ms(now)
        newest = int(now.timestamp() * 1000) + MAX_AHEAD_MS
        buckets: dict[str, _Bucket] = {}

        def bucket(device_id: str, t: int) -> _Bucket:
            hour = hour_of(t)
            key = bucket_id(device_id, hour)
            found = buckets.get(key)
            if found is None:
                found = buckets[key] = _Bucket(device_id, hour)
            return found

        for device_id, rs in readings.items():
            for r in rs:
                if oldest <= r.device_time_ms <= newest:
                    b = bucket(device_id, r.device_time_ms)
                    row = dp_row(r)
                    b.add(_dp_key(row), b.dps, row)
        for device_id, ps in presence.items():
            for p in ps:
                if oldest <= p.device_time_ms <= newest:
                    b = bucket(device_id, p.device_time_ms)
                    row = presence_row(p)
                    b.add(_presence_key(row), b.presence, row)
        if buckets:
            await in_chunks(
                list(buckets.values()),
                self._append,
                size=self.write_chunk,
                concurrency=self.write_concurrency,
            )

    def _append_op(self, b: _Bucket) -> UpdateOne:
        push: Document = {"keys": {"$each": b.keys}}
        if b.dps:
            push["dps"] = {"$each": b.dps}
        if b.presence:
            push["presence"] = {"$each": b.presence}
        # none of these reports may be in the bucket yet: a replay matches nothing and changes nothing
        return UpdateOne(
            {"_id": bucket_id(b.device_id, b.hour_ms), "keys": {"$nin": b.keys}}, {"$push": push}
        )

    def _new_bucket(self, b: _Bucket) -> Document:
        return {
            "_id": bucket_id(b.device_id, b.hour_ms),
            "device_id": b.device_id,
            "hour_ms": b.hour_ms,
            "expire_at": self._expiry(b.hour_ms),
            "dps": b.dps,
            "presence": b.presence,
            "keys": b.keys,
        }

    async def _append(self, chunk: Sequence[_Bucket]) -> None:
        """Append to existing buckets, create the missing ones, then retry what raced or was partly there.

        (Not one upsert: a conditional upsert that matches nothing fails on the existing `_id`, and FerretDB
        1.24's reply to that omits the counts drivers need.)
        """
        todo = list(chunk)
        for _ in range(_APPEND_ATTEMPTS):
            result = await self.buckets.bulk_write([self._append_op(b) for b in todo], ordered=False)
            if result.matched_count == len(todo):
                return
            ids = [bucket_id(b.device_id, b.hour_ms) for b in todo]
            stored = {
                doc["_id"]: set(doc.get("keys", []))
                async for doc in self.buckets.find({"_id": {"$in": ids}}, {"keys": 1})
            }
            missing = [b for b, i in zip(todo, ids, strict=True) if i not in stored]
            raced: list[_Bucket] = []
            if missing:
                try:
                    await self.buckets.insert_many([self._new_bucket(b) for b in missing], ordered=False)
                except BulkWriteError as e:
                    raced = [missing[i] for i in sorted(duplicate_indexes(e))]
            # appended just now, or already there (a replay): nothing left; partly there: the rest
            rest = [b.without(stored[i]) for b, i in zip(todo, ids, strict=True) if i in stored]
            todo = [b for b in rest if b.keys] + raced
            if not todo:
                return
        raise DuplicateKeyError(f"history buckets kept clashing: {[b.device_id for b in todo]}")

    # --- retention ---------------------------------------------------------------------------------------

    async def sweep(self, now: datetime, *, batch: int = 500, max_batches: int = 20) -> int:
        """Delete buckets wholly older than the retention window, `batch` at a time, at most `max_batches`
        batches per call (bounded work; the next call goes on); drop the legacy collections when due.
        Returns how many buckets were deleted."""
        await self._drop_legacy_when_due(now)
        if self.server_expires:
            return 0
        bound = bucket_id(
            "", hour_of(self.oldest_kept_ms(now))
        )  # "<first kept hour>|": every older hour sorts before
        deleted = 0
        for _ in range(max_batches):
            cursor = self.buckets.find({"_id": {"$lt": bound}}, {"_id": 1}).limit(batch)
            ids = [doc["_id"] async for doc in cursor]
            if not ids:
                break
            for chunk in chunks(ids, 500):
                deleted += (await self.buckets.delete_many({"_id": {"$in": list(chunk)}})).deleted_count
            if len(ids) < batch:
                break
        return deleted

    async def _drop_legacy_when_due(self, now: datetime) -> None:
        legacy = await self.meta.find_one({"_id": "legacy"})
        if legacy is None or _aware(legacy["drop_after"]) > now:
            return
        for name in LEGACY_COLLECTIONS:
            await self.db.drop_collection(name)
        await self.meta.delete_one({"_id": "legacy"})
        log.info("dropped the per-report history collections of earlier versions: %s", LEGACY_COLLECTIONS)

    # --- reading -----------------------------------------------------------------------------------------

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
        def rows(bucket: Document) -> list[Document]:
            return [
                {"_id": f"{device_id}|{r['code']}|{r['t']}", **r}
                for r in bucket.get("dps", [])
                if code is None or r["code"] == code
            ]

        return await self._timeline_page(
            device_id, "dps", rows, since_ms=since_ms, until_ms=until_ms, before=before, limit=limit, now=now
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
        def rows(bucket: Document) -> list[Document]:
            return [
                {"_id": f"{device_id}|{r['t']}|{int(r['online'])}", **r} for r in bucket.get("presence", [])
            ]

        return await self._timeline_page(
            device_id,
            "presence",
            rows,
            since_ms=since_ms,
            until_ms=until_ms,
            before=before,
            limit=limit,
            now=now,
        )

    async def _timeline_page(
        self,
        device_id: str,
        section: str,
        rows_of: Callable[[Document], list[Document]],
        *,
        since_ms: int,
        until_ms: int,
        before: tuple[int, str] | None,
        limit: int,
        now: datetime,
    ) -> list[Document]:
        """Rows newest first (by time, then row id), never older than the retention window, after `before`.

        The journal first (see the module docstring), then the buckets, newest hour first, in windows that
        double in size; hours are disjoint in time, so once the rows at or after the oldest hour read fill
        the page, no older bucket can hold a row that belongs on it.
        """
        low = max(since_ms, self.oldest_kept_ms(now))
        high = min(until_ms, int(now.timestamp() * 1000) + MAX_AHEAD_MS)
        if before is not None:
            high = min(high, before[0])
        if low > high:
            return []

        def wanted(row: Document) -> bool:
            t = row["t"]
            if not low <= t <= high:
                return False
            return before is None or t < before[0] or (t == before[0] and row["_id"] < before[1])

        shadow = await self.shadows.find_one({"_id": device_id}, {f"journal.{section}": 1})
        journal = {section: journal_rows((shadow or {}).get("journal"), section)}
        # a row in both the journal and its bucket is the same report: the bucket's copy is kept
        found: dict[str, Document] = {r["_id"]: r for r in rows_of(journal) if wanted(r)}
        hour, last_hour, window = hour_of(high), hour_of(low), 1
        while hour >= last_hour and sum(r["t"] >= hour + HOUR_MS for r in found.values()) < limit:
            hours = [h for h in range(hour, hour - window * HOUR_MS, -HOUR_MS) if h >= last_hour]
            ids = [bucket_id(device_id, h) for h in hours]
            async for bucket in self.buckets.find({"_id": {"$in": ids}}, {section: 1}):
                found.update((r["_id"], r) for r in rows_of(bucket) if wanted(r))
            hour = hours[-1] - HOUR_MS
            window = min(window * 2, _MAX_WINDOW_HOURS)
        rows = sorted(found.values(), key=lambda r: (r["t"], r["_id"]), reverse=True)
        return rows[:limit]


def journal_rows(journal: Mapping[str, Any] | None, section: str) -> list[Document]:
    """A stored journal's section ("dps" or "presence"): one JSON string of rows in the buckets' layout
    (see `adapters/shadows.py`)."""
    raw = (journal or {}).get(section)
    rows: list[Document] = orjson.loads(raw) if raw else []
    return rows


def _aware(value: datetime) -> datetime:
    """A stored datetime as UTC (clients without `tz_aware` read naive UTC datetimes)."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
