"""MongoDB repositories of the status database: shadows (with their outbox), DP history, presence timeline,
DP schemas and API keys.

A shadow write is one single-document operation: the whole new state, its version and the events it causes
(`outbox`) together, conditional on the version read (optimistic concurrency). Writes go in unordered bulk
commands of `write_chunk` statements, `write_concurrency` commands at a time. The defaults (16 statements,
4 commands) were measured on the local FerretDB, which applies writes one at a time: 16-statement commands
ran 1,550 conditional replaces/s against 740/s for single ones (10k documents of 1 KB). MongoDB overlaps
concurrent commands. FerretDB 1.24 deadlocks on an update of ~100 statements (each holds a pooled SQLite
connection until the command ends), so its front refuses more than 64.
History rows have deterministic ids, so a replayed report inserts nothing twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from motor.motor_asyncio import AsyncIOMotorCollection, AsyncIOMotorDatabase
from pymongo import ASCENDING, DESCENDING, InsertOne, ReplaceOne, UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure

from fleet_status.domain.dp_schema import DpDefinition, DpSchema, DpType
from fleet_status.domain.shadow import (
    AcceptedReading,
    Binding,
    BindingState,
    DpState,
    FirmwareChannel,
    Named,
    Presence,
    PresenceReport,
    Shadow,
)

Document = dict[str, Any]
DUPLICATE_KEY = 11000


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """An event waiting to be relayed: its deterministic id, topic, key and the exact body to publish."""

    id: str
    topic: str
    key: str
    body: bytes


@dataclass(slots=True)
class StoredShadow:
    shadow: Shadow
    outbox: list[OutboxEntry] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ShadowWrite:
    shadow: Shadow  # the new state, `version` already bumped
    expected_version: int  # what the write is conditional on (0: the document must not exist yet)
    outbox: list[OutboxEntry]
    write_id: str


# --- mapping --------------------------------------------------------------------------------------------


def outbox_entry_to_doc(entry: OutboxEntry) -> Document:
    # clear_outbox removes entries by exact equality, so this is the one place that lays them out
    return {"id": entry.id, "topic": entry.topic, "key": entry.key, "body": entry.body}


def shadow_to_doc(shadow: Shadow, outbox: Sequence[OutboxEntry], write_id: str, now: datetime) -> Document:
    return {
        "_id": shadow.device_id,
        "product_id": shadow.product_id,
        "version": shadow.version,
        "write_id": write_id,
        "updated_at": now,
        # a list, not a map: DP codes are device input and may hold characters Mongo keys cannot
        "dps": [
            {
                "code": dp.code,
                "value": dp.value,
                "raw": dp.raw,
                "t": dp.device_time_ms,
                "dp_id": dp.dp_id,
                "type": dp.type.value if dp.type else None,
                "flags": dp.flags,
                "source": dp.source,
            }
            for dp in shadow.dps.values()
        ],
        "presence": {
            "online": shadow.presence.online,
            "changed_at_ms": shadow.presence.changed_at_ms,
            "last_seen_ms": shadow.presence.last_seen_ms,
        },
        "binding": {
            "state": shadow.binding.state.value if shadow.binding.state else None,
            "owner_uid": shadow.binding.owner_uid,
            "home_id": shadow.binding.home_id,
            "at_ms": shadow.binding.at_ms,
        },
        "name": None if shadow.name is None else {"name": shadow.name.name, "at_ms": shadow.name.at_ms},
        "dp_names": [{"dp_id": k, "name": v.name, "at_ms": v.at_ms} for k, v in shadow.dp_names.items()],
        "firmware": [
            {
                "channel": fw.channel,
                "upgrade_status": fw.upgrade_status,
                "at_ms": fw.at_ms,
                "progress_percent": fw.progress_percent,
                "description": fw.description,
                "version": fw.version,
                "version_at_ms": fw.version_at_ms,
            }
            for fw in shadow.firmware.values()
        ],
        "outbox": [outbox_entry_to_doc(e) for e in outbox],
    }


def shadow_from_doc(doc: Mapping[str, Any]) -> StoredShadow:
    presence = doc.get("presence") or {}
    binding = doc.get("binding") or {}
    name = doc.get("name")
    shadow = Shadow(
        device_id=doc["_id"],
        product_id=doc.get("product_id"),
        version=int(doc.get("version", 0)),
        dps={
            dp["code"]: DpState(
                code=dp["code"],
                value=dp.get("value"),
                raw=dp.get("raw"),
                device_time_ms=int(dp["t"]),
                dp_id=dp.get("dp_id"),
                type=DpType(dp["type"]) if dp.get("type") else None,
                flags=dp.get("flags"),
                source=dp.get("source", "device"),
            )
            for dp in doc.get("dps", [])
        },
        presence=Presence(
            presence.get("online"), presence.get("changed_at_ms"), presence.get("last_seen_ms")
        ),
        binding=Binding(
            state=BindingState(binding["state"]) if binding.get("state") else None,
            owner_uid=binding.get("owner_uid"),
            home_id=binding.get("home_id"),
            at_ms=int(binding.get("at_ms", -1)),
        ),
        name=None if not name else Named(name["name"], int(name["at_ms"])),
        dp_names={int(n["dp_id"]): Named(n["name"], int(n["at_ms"])) for n in doc.get("dp_names", [])},
        firmware={
            int(fw["channel"]): FirmwareChannel(
                channel=int(fw["channel"]),
                upgrade_status=int(fw["upgrade_status"]),
                at_ms=int(fw["at_ms"]),
                progress_percent=fw.get("progress_percent"),
                description=fw.get("description"),
                version=fw.get("version"),
                version_at_ms=int(fw.get("version_at_ms", -1)),
            )
            for fw in doc.get("firmware", [])
        },
    )
    outbox = [OutboxEntry(e["id"], e["topic"], e["key"], bytes(e["body"])) for e in doc.get("outbox", [])]
    return StoredShadow(shadow, outbox)


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _only_duplicates(error: BulkWriteError) -> bool:
    return all(e.get("code") == DUPLICATE_KEY for e in error.details.get("writeErrors", []))


# --- shadows --------------------------------------------------------------------------------------------


class ShadowStore:
    """The `shadows` collection: one document per device."""

    def __init__(
        self, db: AsyncIOMotorDatabase[Document], *, write_chunk: int = 16, write_concurrency: int = 4
    ) -> None:
        self.db = db
        self.shadows: AsyncIOMotorCollection[Document] = db["shadows"]
        self.write_chunk = write_chunk
        self.write_concurrency = write_concurrency

    async def ensure_indexes(self) -> None:
        await self.shadows.create_index([("product_id", ASCENDING), ("_id", ASCENDING)])
        await self.shadows.create_index([("binding.home_id", ASCENDING), ("_id", ASCENDING)])
        await self.shadows.create_index([("presence.online", ASCENDING), ("_id", ASCENDING)])
        await self.shadows.create_index([("updated_at", ASCENDING)])

    async def ping(self) -> bool:
        await self.db.command("ping")
        return True

    async def load(self, device_ids: Sequence[str]) -> dict[str, StoredShadow]:
        found: dict[str, StoredShadow] = {}
        for chunk in _chunks(list(device_ids), 500):
            filter_: Document = {"_id": chunk[0]} if len(chunk) == 1 else {"_id": {"$in": list(chunk)}}
            async for doc in self.shadows.find(filter_):
                stored = shadow_from_doc(doc)
                found[stored.shadow.device_id] = stored
        return found

    async def write(self, writes: Sequence[ShadowWrite], now: datetime) -> set[str]:
        """Apply the writes; the device ids whose write lost a race (their document moved on meanwhile)."""
        results = await self._in_chunks(list(writes), lambda chunk: self._write_chunk(chunk, now))
        return set().union(*results)

    async def _write_chunk(self, chunk: Sequence[ShadowWrite], now: datetime) -> set[str]:
        ops: list[InsertOne[Document] | ReplaceOne[Document]] = []
        for w in chunk:
            doc = shadow_to_doc(w.shadow, w.outbox, w.write_id, now)
            if w.expected_version == 0:
                ops.append(InsertOne(doc))
            else:
                ops.append(ReplaceOne({"_id": w.shadow.device_id, "version": w.expected_version}, doc))
        try:
            result = await self.shadows.bulk_write(ops, ordered=False)
            done = result.inserted_count + result.matched_count
        except BulkWriteError as e:
            if not _only_duplicates(e):
                raise
            done = -1
        return set() if done == len(ops) else await self._not_written(chunk)

    async def _in_chunks(
        self, items: Sequence[Any], write: Callable[[Sequence[Any]], Awaitable[Any]]
    ) -> list[Any]:
        """Run `write` over chunks of `write_chunk` items, `write_concurrency` commands at a time."""
        gate = asyncio.Semaphore(self.write_concurrency)

        async def one(chunk: Sequence[Any]) -> Any:
            async with gate:
                return await write(chunk)

        return list(await asyncio.gather(*(one(c) for c in _chunks(items, self.write_chunk))))

    async def _not_written(self, chunk: Sequence[ShadowWrite]) -> set[str]:
        """Which writes of a chunk did not land: read back version and write id (they name the writer)."""
        ids = [w.shadow.device_id for w in chunk]
        landed = {
            doc["_id"]: (doc.get("version"), doc.get("write_id"))
            async for doc in self.shadows.find({"_id": {"$in": ids}}, {"version": 1, "write_id": 1})
        }
        return {
            w.shadow.device_id
            for w in chunk
            if landed.get(w.shadow.device_id) != (w.shadow.version, w.write_id)
        }

    async def clear_outbox(self, relayed: Mapping[str, Sequence[OutboxEntry]]) -> None:
        """Remove these relayed entries from their documents' outboxes.

        Removing exactly the relayed entries (not "the outbox of version v") is safe whatever the document's
        version now is, and it filters on `_id` alone, which FerretDB 1.x answers from its index (any other
        filter scans the collection). `$pullAll` matches whole entries: FerretDB 1.x ignores `$pull` with a
        condition.
        """

        async def clear(chunk: Sequence[tuple[str, Sequence[OutboxEntry]]]) -> None:
            ops = [
                UpdateOne({"_id": d}, {"$pullAll": {"outbox": [outbox_entry_to_doc(e) for e in entries]}})
                for d, entries in chunk
                if entries
            ]
            if ops:
                await self.shadows.bulk_write(ops, ordered=False)

        await self._in_chunks(list(relayed.items()), clear)

    async def with_outbox(self, limit: int) -> list[StoredShadow]:
        """Documents whose outbox still holds events (after a crash between write and relay)."""
        cursor = self.shadows.find({"outbox.0": {"$exists": True}}).limit(limit)
        return [shadow_from_doc(doc) async for doc in cursor]

    async def stale(self, before: datetime, limit: int) -> list[str]:
        cursor = self.shadows.find({"updated_at": {"$lt": before}}, {"_id": 1}).sort("updated_at", 1)
        return [doc["_id"] async for doc in cursor.limit(limit)]

    async def touch(self, device_ids: Sequence[str], now: datetime) -> None:
        """Mark reconciled shadows fresh without a state change (the cloud agreed with them)."""
        if device_ids:
            await self.shadows.update_many({"_id": {"$in": list(device_ids)}}, {"$set": {"updated_at": now}})

    # queries for the HTTP API

    async def get(self, device_id: str) -> Document | None:
        return await self.shadows.find_one({"_id": device_id}, {"outbox": 0, "write_id": 0})

    async def list(
        self,
        *,
        product_id: str | None,
        home_id: str | None,
        online: bool | None,
        after: str | None,
        limit: int,
    ) -> list[Document]:
        filter_: Document = {}
        if product_id is not None:
            filter_["product_id"] = product_id
        if home_id is not None:
            filter_["binding.home_id"] = home_id
        if online is not None:
            filter_["presence.online"] = online
        if after is not None:
            filter_["_id"] = {"$gt": after}
        cursor = self.shadows.find(filter_, {"outbox": 0, "write_id": 0}).sort("_id", 1).limit(limit)
        return [doc async for doc in cursor]


# --- history --------------------------------------------------------------------------------------------


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
            for chunk in _chunks(rows, 1000):
                try:
                    await collection.insert_many(list(chunk), ordered=False)
                except BulkWriteError as e:
                    if not _only_duplicates(e):
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


# --- DP schemas -----------------------------------------------------------------------------------------


def schema_to_doc(schema: DpSchema, fetched_at: datetime) -> Document:
    return {
        "_id": schema.product_id,
        "fetched_at": fetched_at,
        "dps": [
            {
                "code": d.code,
                "dp_id": d.dp_id,
                "type": d.type.value if d.type else None,
                "scale": d.scale,
                "min": d.min,
                "max": d.max,
                "unit": d.unit,
                "range": list(d.range),
                "labels": list(d.labels),
                "maxlen": d.maxlen,
            }
            for d in schema.dps.values()
        ],
    }


def schema_from_doc(doc: Mapping[str, Any]) -> DpSchema:
    return DpSchema(
        product_id=doc["_id"],
        dps={
            d["code"]: DpDefinition(
                code=d["code"],
                dp_id=d.get("dp_id"),
                type=DpType(d["type"]) if d.get("type") else None,
                scale=int(d.get("scale") or 0),
                min=d.get("min"),
                max=d.get("max"),
                unit=d.get("unit"),
                range=tuple(d.get("range") or ()),
                labels=tuple(d.get("labels") or ()),
                maxlen=d.get("maxlen"),
            )
            for d in doc.get("dps", [])
        },
    )


class SchemaStore:
    """Product DP schemas as last fetched, so a restart does not ask the OpenAPI for each product again."""

    def __init__(self, db: AsyncIOMotorDatabase[Document]) -> None:
        self.schemas: AsyncIOMotorCollection[Document] = db["dp_schemas"]

    async def get(self, product_id: str) -> tuple[DpSchema, datetime] | None:
        doc = await self.schemas.find_one({"_id": product_id})
        if doc is None:
            return None
        fetched_at: datetime = doc["fetched_at"]
        return schema_from_doc(doc), fetched_at

    async def put(self, schema: DpSchema, fetched_at: datetime) -> None:
        await self.schemas.replace_one(
            {"_id": schema.product_id}, schema_to_doc(schema, fetched_at), upsert=True
        )


# --- API keys -------------------------------------------------------------------------------------------


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
