"""The `shadows` collection: one document per device, holding its whole state and its outbox.

A shadow write is one single-document operation: the whole new state, its version and the events it causes
(`outbox`) together, conditional on the version read (optimistic concurrency). Writes go in unordered bulk
commands of `write_chunk` statements, `write_concurrency` commands at a time. The defaults (16 statements,
4 commands) were measured on the local FerretDB, which applies writes one at a time: 16-statement commands
ran 1,550 conditional replaces/s against 740/s for single ones (10k documents of 1 KB). MongoDB overlaps
concurrent commands. FerretDB 1.24 deadlocks on an update of ~100 statements (each holds a pooled SQLite
connection until the command ends), so its front refuses more than 64.

The document also holds the device's history journal (`domain/journal.py`): the DP and presence rows not
yet moved to their history buckets, written whole with the shadow, so a report is durable with this one
write. Rows have the buckets' layout (`adapters/history.py`), which reads them from here too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson
from motor.motor_asyncio import AsyncIOMotorCollection, AsyncIOMotorDatabase
from pymongo import ASCENDING, InsertOne, ReplaceOne
from pymongo.errors import BulkWriteError

from fleet_contracts.outbox import OutboxEntry, entries_of
from fleet_contracts.tuya import DpType
from fleet_shared import mongo
from fleet_status.adapters.bulk import chunks, in_chunks, only_duplicates
from fleet_status.adapters.history import SHADOWS, dp_row, journal_rows, presence_row
from fleet_status.domain.journal import Journal
from fleet_status.domain.shadow import (
    AcceptedReading,
    Binding,
    BindingState,
    DpState,
    FirmwareChannel,
    InactivityTimeout,
    Named,
    Presence,
    PresenceReport,
    Shadow,
)
from fleet_status.ports import Document, ShadowWrite, StoredShadow

# --- mapping --------------------------------------------------------------------------------------------


# what the HTTP API never shows of a shadow document
_INTERNAL: Document = {"outbox": 0, "write_id": 0, "journal": 0}


def journal_to_doc(journal: Journal) -> Document:
    # each section one JSON string, not an array of sub-documents: the local FerretDB's cost per write grows
    # with the number of fields it converts (measured: a journal of 16 rows as sub-documents cost more than
    # the bucket write it saves); nothing queries inside a journal
    return {
        "since_ms": journal.since_ms,
        "dps": orjson.dumps([dp_row(r) for r in journal.readings]).decode(),
        "presence": orjson.dumps([presence_row(p) for p in journal.presence]).decode(),
    }


def journal_from_doc(doc: Mapping[str, Any] | None) -> Journal:
    if not doc:
        return Journal()  # a document written before the journal existed
    return Journal(
        tuple(
            AcceptedReading(r["code"], r.get("dp_id"), r.get("value"), r.get("raw"), int(r["t"]))
            for r in journal_rows(doc, "dps")
        ),
        tuple(PresenceReport(bool(p["online"]), int(p["t"])) for p in journal_rows(doc, "presence")),
        doc.get("since_ms"),
    )


def shadow_to_doc(
    shadow: Shadow,
    outbox: Sequence[OutboxEntry],
    write_id: str,
    now: datetime,
    journal: Journal | None = None,
) -> Document:
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
            # as the shadow tells it (offline while inactive): what lists filter on and views show
            "online": shadow.presence.effective_online,
            "reported_online": shadow.presence.online,
            "changed_at_ms": shadow.presence.changed_at_ms,
            "last_seen_ms": shadow.presence.last_seen_ms,
            "deadline_ms": shadow.presence.deadline_ms,  # indexed: the inactivity sweep reads what is due
            "inactive_at_ms": shadow.presence.inactive_at_ms,
            "cause": shadow.presence.cause,
        },
        "inactivity_timeout": None
        if shadow.inactivity_timeout is None
        else {"timeout_ms": shadow.inactivity_timeout.timeout_ms, "at_ms": shadow.inactivity_timeout.at_ms},
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
        "outbox": [e.to_document() for e in outbox],
        "journal": journal_to_doc(journal or Journal()),
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
            # documents written before inactivity existed hold the reported presence in `online`
            presence.get("reported_online", presence.get("online")),
            presence.get("changed_at_ms"),
            presence.get("last_seen_ms"),
            presence.get("deadline_ms"),
            presence.get("inactive_at_ms"),
        ),
        inactivity_timeout=None
        if not doc.get("inactivity_timeout")
        else InactivityTimeout(
            doc["inactivity_timeout"]["timeout_ms"], int(doc["inactivity_timeout"]["at_ms"])
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
    outbox = entries_of(doc)
    return StoredShadow(shadow, outbox, journal_from_doc(doc.get("journal")))


# --- the store ------------------------------------------------------------------------------------------


class ShadowStore:
    """The `shadows` collection: one document per device."""

    def __init__(
        self, db: AsyncIOMotorDatabase[Document], *, write_chunk: int = 16, write_concurrency: int = 4
    ) -> None:
        self.shadows: AsyncIOMotorCollection[Document] = db[SHADOWS]
        self.write_chunk = write_chunk
        self.write_concurrency = write_concurrency

    async def ensure_indexes(self) -> None:
        await self.shadows.create_index([("product_id", ASCENDING), ("_id", ASCENDING)])
        await self.shadows.create_index([("binding.home_id", ASCENDING), ("_id", ASCENDING)])
        await self.shadows.create_index([("presence.online", ASCENDING), ("_id", ASCENDING)])
        await self.shadows.create_index([("updated_at", ASCENDING)])
        await self.shadows.create_index([("presence.deadline_ms", ASCENDING)])

    async def load(self, device_ids: Sequence[str]) -> dict[str, StoredShadow]:
        found: dict[str, StoredShadow] = {}
        for chunk in chunks(list(device_ids), 500):
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
            doc = shadow_to_doc(w.shadow, w.outbox, w.write_id, now, w.journal)
            if w.expected_version == 0:
                ops.append(InsertOne(doc))
            else:
                ops.append(ReplaceOne({"_id": w.shadow.device_id, "version": w.expected_version}, doc))
        try:
            result = await self.shadows.bulk_write(ops, ordered=False)
            done = result.inserted_count + result.matched_count
        except BulkWriteError as e:
            if not only_duplicates(e):
                raise
            done = -1
        return set() if done == len(ops) else await self._not_written(chunk)

    async def _in_chunks(
        self, items: Sequence[Any], write: Callable[[Sequence[Any]], Awaitable[Any]]
    ) -> list[Any]:
        return await in_chunks(items, write, size=self.write_chunk, concurrency=self.write_concurrency)

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
            await mongo.clear_relayed(self.shadows, chunk)

        await self._in_chunks(list(relayed.items()), clear)

    async def with_outbox(self, limit: int) -> list[StoredShadow]:
        """Documents whose outbox still holds events (after a crash between write and relay)."""
        cursor = self.shadows.find({"outbox.0": {"$exists": True}}).limit(limit)
        return [shadow_from_doc(doc) async for doc in cursor]

    async def stale(self, before: datetime, limit: int) -> list[str]:
        cursor = self.shadows.find({"updated_at": {"$lt": before}}, {"_id": 1}).sort("updated_at", 1)
        return [doc["_id"] async for doc in cursor.limit(limit)]

    async def due(self, now_ms: int, limit: int) -> list[tuple[str, int]]:
        """Devices whose inactivity deadline (device time) has passed, with it; at most `limit`, from the
        `presence.deadline_ms` index (a device found inactive has no deadline, so it drops out)."""
        cursor = self.shadows.find({"presence.deadline_ms": {"$lte": now_ms}}, {"presence.deadline_ms": 1})
        return [(doc["_id"], int(doc["presence"]["deadline_ms"])) async for doc in cursor.limit(limit)]

    async def touch(self, device_ids: Sequence[str], now: datetime) -> None:
        """Mark reconciled shadows fresh without a state change (the cloud agreed with them)."""
        if device_ids:
            await self.shadows.update_many({"_id": {"$in": list(device_ids)}}, {"$set": {"updated_at": now}})

    # queries for the HTTP API

    async def get(self, device_id: str) -> Document | None:
        return await self.shadows.find_one({"_id": device_id}, _INTERNAL)

    async def list(
        self,
        *,
        product_id: str | None,
        home_id: str | None,
        online: bool | None,
        after: str | None,
        limit: int,
        products: frozenset[str] | None = None,
    ) -> list[Document]:
        filter_ = self.list_filter(
            product_id=product_id, home_id=home_id, online=online, after=after, products=products
        )
        cursor = self.shadows.find(filter_, _INTERNAL).sort("_id", 1).limit(limit)
        return [doc async for doc in cursor]

    @staticmethod
    def list_filter(
        *,
        product_id: str | None,
        home_id: str | None,
        online: bool | None,
        after: str | None,
        products: frozenset[str] | None = None,
    ) -> Document:
        """A device list's filter (its page is sorted by `_id`); each field leads an index with `_id`.

        `products`: the caller's product scope (None: every product); the list holds only those."""
        # most selective first: the local FerretDB reads the index of the first field (MongoDB plans its own)
        filter_: Document = {}
        if home_id is not None:
            filter_["binding.home_id"] = home_id
        wanted = products
        if product_id is not None:
            wanted = frozenset({product_id}) if products is None else products & {product_id}
        if wanted is not None:
            # one product (the usual case, also for a key scoped to one) keeps the plain equality query
            filter_["product_id"] = next(iter(wanted)) if len(wanted) == 1 else {"$in": sorted(wanted)}
        if online is not None:
            filter_["presence.online"] = online
        # always a string bound on `_id`: device ids are strings, and with it every server answers the page
        # from an index in `_id` order, reading about `limit` documents (FerretDB's build orders in SQL only
        # when every match is known to have a string `_id`)
        filter_["_id"] = {"$gt": after} if after is not None else {"$gte": ""}
        return filter_
