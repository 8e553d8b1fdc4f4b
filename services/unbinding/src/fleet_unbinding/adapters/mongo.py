"""MongoDB repositories of the unbinding database.

Collections (one database per service):
- `batches` and `device_unbinds`: state documents with a `version`; every write is one conditional update
  (`{_id, version: v - 1}`) that sets the new state and appends the events it causes to `outbox` (`$push`,
  so events not yet relayed are never overwritten) and sets `outbox_pending` in that same write. The relay
  finds pending documents through the sparse index on `outbox_pending` (not a scan), publishes, then
  empties the outbox and unsets the flag in one write conditional on the version it read (nothing was
  appended since); where the version moved, it removes exactly the relayed entries (`$pullAll`) and
  unsets the flag only where the outbox is empty (a write that appended meanwhile keeps it).
- Queries name only equality on indexed fields where they can (`batch_id`, flags), so a MongoDB-wire
  server without a query planner for other shapes still answers them from an index.
- `unbind_records`: the append-only record of every device's result, inserted by the relay from the final
  device document (deterministic `_id`, so a replay inserts nothing); queried by device, operator, product
  and day, each from its own index.
- `quota_counters`: one document per (scope, day, subject) with `used`, the open `blocks` (a map block id
  -> `{n, until}`, `open` their number, indexed) and the `refunds` (unit names). A block is reserved with
  one atomic conditional update (`used <= limit - n`: `$inc used n`, `$set blocks.<id>`); a missing counter
  is created by an insert whose duplicate-key loss falls back to the update; settled with one conditional
  on the block still being listed (`$inc used -(n - consumed)`, `$unset blocks.<id>`); a refund is
  conditional on its unit not being in `refunds` yet. So the counter never passes its limit under any
  concurrency, and settling or refunding twice counts once.
- Counters written by the earlier version (before blocks) list each unit they hold by name (`units`:
  batch/device) and have no `blocks`, `open` or `refunds`: blocks are reserved on them as on any other
  (the missing fields are created by the first block's `$inc`/`$set`, `used` already counts the listed
  units); a listed unit is refunded only while listed (`refund_listed`), as that version did. Units of
  devices that were unbound stay listed (and counted) until the day's counter is no longer used.
- `quota_limits` and `authorization_records`: append-only logs with a per-subject sequence in `_id`; an
  append whose sequence is taken fails with a duplicate key (someone appended first: fold again).

Only single-document atomic operations are used; nothing depends on FerretDB behaviour.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from motor.motor_asyncio import AsyncIOMotorCollection, AsyncIOMotorDatabase
from pymongo import ASCENDING, DESCENDING, UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError

from fleet_contracts.outbox import OutboxEntry, entries_of
from fleet_contracts.unbinding import RefusalCause, UnbindMode
from fleet_shared import mongo
from fleet_unbinding.domain import authorization as authz
from fleet_unbinding.domain.batch import Batch, BatchStatus, Tally
from fleet_unbinding.domain.qr import QrSession
from fleet_unbinding.domain.quota import CounterKey, LimitOverride, OpenBlock, QuotaScope
from fleet_unbinding.domain.unbind import DeviceUnbind, UnbindState

Document = dict[str, Any]
DUPLICATE_KEY = 11000
# statements per update command: the local FerretDB holds a pooled connection per statement until the
# command ends and refuses more than 64 (it deadlocks past ~100); MongoDB takes any number
_UPDATES_PER_COMMAND = 64
_CREATE_TRIES = 5


def _only_duplicates(error: BulkWriteError) -> bool:
    return all(e.get("code") == DUPLICATE_KEY for e in error.details.get("writeErrors", []))


# the earlier version's list of unit names held in a counter (before quota blocks)
LEGACY_UNITS = "units"
# set (to True) in the write that appends events, unset once the outbox is empty again; sparse-indexed
PENDING = "outbox_pending"


def _with_outbox(update: Document, outbox: Sequence[OutboxEntry]) -> Document:
    """The conditional state write, appending `outbox` and flagging the document pending in the same write."""
    if outbox:
        update["$push"] = {"outbox": {"$each": [e.to_document() for e in outbox]}}
        update["$set"] = {**update["$set"], PENDING: True}
    return update


async def _clear_outbox(
    collection: AsyncIOMotorCollection[Document], doc_id: str, entries: Sequence[OutboxEntry]
) -> None:
    await collection.update_one({"_id": doc_id}, mongo.pull_relayed(entries))
    # only where nothing was appended since: a concurrent write's events keep the document pending
    await collection.update_one({"_id": doc_id, "outbox": {"$size": 0}}, {"$unset": {PENDING: ""}})


async def _clear_outboxes(
    collection: AsyncIOMotorCollection[Document], relayed: Sequence[tuple[str, int, Sequence[OutboxEntry]]]
) -> None:
    """Empty the outboxes of (id, version read, entries relayed): one round trip for those whose version
    did not move (their outbox holds exactly what was read), entry by entry for the others."""
    if not relayed:
        return
    ops = [
        UpdateOne({"_id": doc_id, "version": version}, {"$set": {"outbox": []}, "$unset": {PENDING: ""}})
        for doc_id, version, _ in relayed
    ]
    matched = 0
    for start in range(0, len(ops), _UPDATES_PER_COMMAND):
        result = await collection.bulk_write(ops[start : start + _UPDATES_PER_COMMAND], ordered=False)
        matched += result.matched_count
    if matched == len(ops):
        return
    # some moved on: entry by entry where the version is no longer the one read (or the outbox still
    # holds entries: removing relayed ones again changes nothing)
    cursor = collection.find(
        {"_id": {"$in": [doc_id for doc_id, _, _ in relayed]}}, {"version": 1, PENDING: 1}
    )
    moved = {doc["_id"] async for doc in cursor if doc.get(PENDING)}
    for doc_id, _, entries in relayed:
        if doc_id in moved:
            await _clear_outbox(collection, doc_id, entries)


# --- batches --------------------------------------------------------------------------------------------


def batch_to_doc(batch: Batch) -> Document:
    qr = batch.qr
    return {
        "operator_id": batch.operator_id,
        "mode": batch.mode.value,
        "device_ids": list(batch.device_ids),
        "created_at": batch.created_at,
        "fingerprint": batch.fingerprint,
        "status": batch.status.value,
        "product_id": batch.product_id,
        "reset": batch.reset,
        "gateway_id": batch.gateway_id,
        "reason": batch.reason,
        "idempotency_key": batch.idempotency_key,
        "approved_by": batch.approved_by,
        "cancelled_by": batch.cancelled_by,
        "qr": None
        if qr is None
        else {
            "token": qr.token,
            "expires_at": qr.expires_at,
            "capacity": qr.capacity,
            "admitted": list(qr.admitted),
        },
        "finished_at": batch.finished_at,
        "devices_added": batch.devices_added,
        "version": batch.version,
    }


def batch_from_doc(doc: Mapping[str, Any]) -> Batch:
    qr = doc.get("qr")
    return Batch(
        batch_id=doc["_id"],
        operator_id=doc["operator_id"],
        mode=UnbindMode(doc["mode"]),
        device_ids=tuple(doc.get("device_ids", ())),
        created_at=doc["created_at"],
        fingerprint=doc["fingerprint"],
        status=BatchStatus(doc["status"]),
        product_id=doc.get("product_id"),
        reset=bool(doc.get("reset", False)),
        gateway_id=doc.get("gateway_id"),
        reason=doc.get("reason"),
        idempotency_key=doc.get("idempotency_key"),
        approved_by=doc.get("approved_by"),
        cancelled_by=doc.get("cancelled_by"),
        qr=None
        if not qr
        else QrSession(qr["token"], qr["expires_at"], int(qr["capacity"]), tuple(qr.get("admitted", ()))),
        finished_at=doc.get("finished_at"),
        devices_added=bool(doc.get("devices_added", False)),
        version=int(doc["version"]),
    )


class MongoBatchStore:
    def __init__(self, db: AsyncIOMotorDatabase[Document]) -> None:
        self.batches: AsyncIOMotorCollection[Document] = db["batches"]

    async def ensure_indexes(self) -> None:
        await self.batches.create_index([("status", ASCENDING), ("created_at", ASCENDING)])
        await self.batches.create_index([("operator_id", ASCENDING), ("created_at", DESCENDING)])
        await self.batches.create_index([("qr.token", ASCENDING)], sparse=True)
        await self.batches.create_index([(PENDING, ASCENDING)], sparse=True)

    async def get(self, batch_id: str) -> Batch | None:
        doc = await self.batches.find_one({"_id": batch_id}, {"outbox": 0})
        return None if doc is None else batch_from_doc(doc)

    async def add(self, batch: Batch, outbox: Sequence[OutboxEntry]) -> bool:
        doc = {
            "_id": batch.batch_id,
            **batch_to_doc(batch),
            "outbox": [e.to_document() for e in outbox],
            **({PENDING: True} if outbox else {}),
        }
        try:
            await self.batches.insert_one(doc)
        except DuplicateKeyError:
            return False
        return True

    async def save(self, batch: Batch, outbox: Sequence[OutboxEntry]) -> bool:
        update = _with_outbox({"$set": batch_to_doc(batch)}, outbox)
        result = await self.batches.update_one({"_id": batch.batch_id, "version": batch.version - 1}, update)
        return result.matched_count == 1

    async def running(self, limit: int) -> list[str]:
        cursor = self.batches.find(
            {"status": {"$in": [BatchStatus.RUNNING.value, BatchStatus.AWAITING_APPROVAL.value]}}, {"_id": 1}
        ).sort("created_at", 1)
        return [doc["_id"] async for doc in cursor.limit(limit)]

    async def open_qr(self, limit: int) -> list[str]:
        """Ids of unfinished QR batches (their pairing tokens are polled for scans)."""
        cursor = self.batches.find(
            {"status": BatchStatus.RUNNING.value, "mode": UnbindMode.QR.value}, {"_id": 1}
        ).sort("created_at", 1)
        return [doc["_id"] async for doc in cursor.limit(limit)]

    async def of_operator(self, operator_id: str | None, limit: int) -> list[Batch]:
        """Batches newest first, of one operator or of all."""
        filter_: Document = {} if operator_id is None else {"operator_id": operator_id}
        cursor = self.batches.find(filter_, {"outbox": 0}).sort("created_at", -1).limit(limit)
        return [batch_from_doc(doc) async for doc in cursor]

    async def by_qr_token(self, token: str) -> Batch | None:
        doc = await self.batches.find_one({"qr.token": token}, {"outbox": 0})
        return None if doc is None else batch_from_doc(doc)

    async def with_outbox(self, limit: int) -> list[tuple[str, list[OutboxEntry]]]:
        cursor = self.batches.find({PENDING: True}, {"outbox": 1}).limit(limit)
        return [(doc["_id"], entries_of(doc)) async for doc in cursor]

    async def clear_outbox(self, batch_id: str, entries: Sequence[OutboxEntry]) -> None:
        await _clear_outbox(self.batches, batch_id, entries)


# --- device unbinds and their records -------------------------------------------------------------------


# the counters a device's `quota_blocks` belong to, in `quota.counter_keys` order
_BLOCK_SCOPES = (QuotaScope.ACCOUNT.value, QuotaScope.PRODUCT.value)


def unbind_to_doc(u: DeviceUnbind) -> Document:
    return {
        "batch_id": u.batch_id,
        "device_id": u.device_id,
        "operator_id": u.operator_id,
        "mode": u.mode.value,
        "reset": u.reset,
        "batch_product_id": u.batch_product_id,
        "state": u.state.value,
        "product_id": u.product_id,
        "owner_uid": u.owner_uid,
        "active_time": u.active_time,
        "cause": None if u.cause is None else u.cause.value,
        "tuya_error_code": u.tuya_error_code,
        "detail": u.detail,
        "quota_day": u.quota_day,
        # one top-level field per counter: an indexed equality finds a block's devices
        **{f"{scope}_block": block for scope, block in zip(_BLOCK_SCOPES, u.quota_blocks, strict=False)},
        "units_held": u.units_held,
        "reconciled": u.reconciled,
        "calls": u.calls,
        "called_at": u.called_at,
        "finished_at": u.finished_at,
        "version": u.version,
    }


def unbind_from_doc(doc: Mapping[str, Any]) -> DeviceUnbind:
    return DeviceUnbind(
        batch_id=doc["batch_id"],
        device_id=doc["device_id"],
        operator_id=doc["operator_id"],
        mode=UnbindMode(doc["mode"]),
        reset=bool(doc.get("reset", False)),
        batch_product_id=doc.get("batch_product_id"),
        state=UnbindState(doc["state"]),
        product_id=doc.get("product_id"),
        owner_uid=doc.get("owner_uid"),
        active_time=doc.get("active_time"),
        cause=None if doc.get("cause") is None else RefusalCause(doc["cause"]),
        tuya_error_code=doc.get("tuya_error_code"),
        detail=doc.get("detail"),
        quota_day=doc.get("quota_day"),
        quota_blocks=tuple(
            doc[f"{scope}_block"] for scope in _BLOCK_SCOPES if doc.get(f"{scope}_block") is not None
        ),
        units_held=bool(doc.get("units_held", False)),
        reconciled=bool(doc.get("reconciled", False)),
        calls=int(doc.get("calls", 0)),
        called_at=doc.get("called_at"),
        finished_at=doc.get("finished_at"),
        version=int(doc["version"]),
    )


def record_of(u: DeviceUnbind) -> Document:
    """The append-only record of a device's final result."""
    if not u.state.final or u.finished_at is None:
        raise ValueError(f"{u.id} has no result yet")
    return {
        "_id": u.id,
        "batch_id": u.batch_id,
        "device_id": u.device_id,
        "operator_id": u.operator_id,
        "product_id": u.product_id,
        "mode": u.mode.value,
        "result": u.state.value,
        "cause": None if u.cause is None else u.cause.value,
        "tuya_error_code": u.tuya_error_code,
        "detail": u.detail,
        "previous_owner_uid": u.owner_uid,
        "reconciled": u.reconciled,
        "at": u.finished_at,
        "day": u.finished_at.date().isoformat(),  # UTC day of the result
    }


class MongoUnbindStore:
    def __init__(self, db: AsyncIOMotorDatabase[Document]) -> None:
        self.unbinds: AsyncIOMotorCollection[Document] = db["device_unbinds"]
        self.records: AsyncIOMotorCollection[Document] = db["unbind_records"]

    async def ensure_indexes(self) -> None:
        await self.unbinds.create_index([("batch_id", ASCENDING), ("state", ASCENDING)])
        await self.unbinds.create_index([("units_held", ASCENDING), ("state", ASCENDING)])
        for scope in _BLOCK_SCOPES:
            await self.unbinds.create_index([(f"{scope}_block", ASCENDING)], sparse=True)
        await self.unbinds.create_index([(PENDING, ASCENDING)], sparse=True)
        # record pages: one field, newest first, (at, _id) as the cursor
        for field in ("device_id", "operator_id", "product_id", "day"):
            await self.records.create_index([(field, ASCENDING), ("at", DESCENDING), ("_id", DESCENDING)])
        await self.records.create_index([("batch_id", ASCENDING), ("device_id", ASCENDING)])

    async def add_many(self, unbinds: Sequence[DeviceUnbind]) -> None:
        docs = [{"_id": u.id, **unbind_to_doc(u), "outbox": []} for u in unbinds]
        for start in range(0, len(docs), 500):
            try:
                await self.unbinds.insert_many(docs[start : start + 500], ordered=False)
            except BulkWriteError as e:
                if not _only_duplicates(e):
                    raise

    async def get(self, batch_id: str, device_id: str) -> DeviceUnbind | None:
        doc = await self.unbinds.find_one({"_id": f"{batch_id}/{device_id}"}, {"outbox": 0})
        return None if doc is None else unbind_from_doc(doc)

    async def save(self, unbind: DeviceUnbind, outbox: Sequence[OutboxEntry]) -> bool:
        update = _with_outbox({"$set": unbind_to_doc(unbind)}, outbox)
        result = await self.unbinds.update_one({"_id": unbind.id, "version": unbind.version - 1}, update)
        return result.matched_count == 1

    async def of_batch(self, batch_id: str) -> list[DeviceUnbind]:
        # equality on the indexed `batch_id` only (a state `$in` would defeat a plain index lookup)
        cursor = self.unbinds.find({"batch_id": batch_id}, {"outbox": 0})
        return [unbind_from_doc(doc) async for doc in cursor]

    async def open(self, batch_id: str) -> list[DeviceUnbind]:
        return [u for u in await self.of_batch(batch_id) if not u.state.final]

    async def refunds_due(self, limit: int) -> list[DeviceUnbind]:
        cursor = self.unbinds.find({"units_held": True, "state": UnbindState.REFUSED.value}, {"outbox": 0})
        return [unbind_from_doc(doc) async for doc in cursor.limit(limit)]

    async def holding(self, key: CounterKey, block_id: str) -> int:
        return await self.unbinds.count_documents({f"{key.scope.value}_block": block_id})

    async def counts(self, batch_id: str) -> tuple[dict[UnbindState, int], dict[RefusalCause, int]]:
        """Devices of a batch per state, and the refused ones per cause: counted by the server (a progress
        read of a 1,000-device batch returns a handful of rows, not 1,000 documents)."""
        by_state: dict[UnbindState, int] = {}
        async for row in self.unbinds.aggregate(
            [{"$match": {"batch_id": batch_id}}, {"$group": {"_id": "$state", "n": {"$sum": 1}}}]
        ):
            by_state[UnbindState(row["_id"])] = int(row["n"])
        causes: dict[RefusalCause, int] = {}
        if by_state.get(UnbindState.REFUSED):
            refused = {"batch_id": batch_id, "state": UnbindState.REFUSED.value}
            async for row in self.unbinds.aggregate(
                [{"$match": refused}, {"$group": {"_id": "$cause", "n": {"$sum": 1}}}]
            ):
                if row["_id"] is not None:
                    causes[RefusalCause(row["_id"])] = int(row["n"])
        return by_state, causes

    async def tally(self, batch_id: str) -> tuple[int, Tally]:
        by_state, causes = await self.counts(batch_id)
        still_open = sum(n for state, n in by_state.items() if not state.final)
        return still_open, Tally(by_state.get(UnbindState.UNBOUND, 0), causes)

    async def with_outbox(self, limit: int) -> list[tuple[DeviceUnbind, list[OutboxEntry]]]:
        cursor = self.unbinds.find({PENDING: True}).limit(limit)
        return [(unbind_from_doc(doc), entries_of(doc)) async for doc in cursor]

    async def clear_outbox(self, unbind_id: str, entries: Sequence[OutboxEntry]) -> None:
        await _clear_outbox(self.unbinds, unbind_id, entries)

    async def clear_outboxes(self, relayed: Sequence[tuple[DeviceUnbind, Sequence[OutboxEntry]]]) -> None:
        await _clear_outboxes(self.unbinds, [(u.id, u.version, entries) for u, entries in relayed])

    async def results(self, batch_id: str) -> list[DeviceUnbind]:
        """The devices of a batch that have their result, in device id order."""
        done = [u for u in await self.of_batch(batch_id) if u.state.final]
        return sorted(done, key=lambda u: u.device_id)

    async def add_records(self, unbinds: Sequence[DeviceUnbind]) -> None:
        """Insert the records of final results (a record already there is kept as it is: append-only)."""
        docs = [record_of(u) for u in unbinds if u.state.final]
        if not docs:
            return
        try:
            await self.records.insert_many(docs, ordered=False)
        except BulkWriteError as e:
            if not _only_duplicates(e):
                raise

    async def find_records(
        self,
        *,
        device_id: str | None = None,
        operator_id: str | None = None,
        product_id: str | None = None,
        day: str | None = None,
        before: tuple[datetime, str] | None = None,
        limit: int = 100,
    ) -> list[Document]:
        """Records newest first, filtered by one indexed field (device, operator, product or day) and
        optionally narrowed by the others; `before`: (`at`, `_id`) of the previous page's last record."""
        filter_: Document = {
            k: v
            for k, v in (
                ("device_id", device_id),
                ("operator_id", operator_id),
                ("product_id", product_id),
                ("day", day),
            )
            if v is not None
        }
        if not filter_:
            raise ValueError("name a device, operator, product or day")
        if before is not None:
            at, record_id = before
            filter_["$or"] = [{"at": {"$lt": at}}, {"at": at, "_id": {"$lt": record_id}}]
        cursor = self.records.find(filter_).sort([("at", DESCENDING), ("_id", DESCENDING)]).limit(limit)
        return [doc async for doc in cursor]


# --- quotas ---------------------------------------------------------------------------------------------


class MongoQuotaCounters:
    def __init__(self, db: AsyncIOMotorDatabase[Document]) -> None:
        self.counters: AsyncIOMotorCollection[Document] = db["quota_counters"]

    async def ensure_indexes(self) -> None:
        await self.counters.create_index([("scope", ASCENDING), ("subject", ASCENDING), ("day", DESCENDING)])
        await self.counters.create_index([("open", ASCENDING)])

    async def reserve_block(
        self, key: CounterKey, limit: int, want: int, block_id: str, until: datetime
    ) -> int:
        n = want
        for _ in range(_CREATE_TRIES + 3):
            if n <= 0:
                return 0
            result = await self.counters.update_one(
                {"_id": key.id, "used": {"$lte": limit - n}},
                {"$inc": {"used": n, "open": 1}, "$set": {f"blocks.{block_id}": {"n": n, "until": until}}},
            )
            if result.modified_count == 1:
                return n
            doc = await self.counters.find_one({"_id": key.id}, {"used": 1})
            if doc is not None:
                n = min(want, limit - int(doc["used"]))  # what is left (another writer may take it first)
                continue
            n = min(want, limit)
            if n <= 0:
                return 0
            try:
                await self.counters.insert_one(
                    {
                        "_id": key.id,
                        "scope": key.scope.value,
                        "subject": key.subject,
                        "day": key.day,
                        "used": n,
                        "open": 1,
                        "blocks": {block_id: {"n": n, "until": until}},
                        "refunds": [],
                    }
                )
            except DuplicateKeyError:
                continue  # created concurrently: the conditional update decides
            return n
        raise RuntimeError(f"quota counter {key.id} kept changing")

    async def settle(self, key: CounterKey, block_id: str, n: int, consumed: int) -> None:
        if not 0 <= consumed <= n:
            raise ValueError(f"block {block_id}: {consumed} of {n} units consumed")
        await self.counters.update_one(
            {"_id": key.id, f"blocks.{block_id}": {"$exists": True}},
            {"$inc": {"used": consumed - n, "open": -1}, "$unset": {f"blocks.{block_id}": ""}},
        )

    async def refund(self, keys: Sequence[CounterKey], unit: str) -> None:
        for key in keys:
            await self.counters.update_one(
                {"_id": key.id, "refunds": {"$ne": unit}}, {"$inc": {"used": -1}, "$push": {"refunds": unit}}
            )

    async def refund_listed(self, keys: Sequence[CounterKey], unit: str) -> None:
        for key in keys:
            await self.counters.update_one(
                {"_id": key.id, LEGACY_UNITS: unit},
                {"$inc": {"used": -1}, "$pullAll": {LEGACY_UNITS: [unit]}},
            )

    async def open_blocks(self) -> list[OpenBlock]:
        cursor = self.counters.find({"open": {"$gt": 0}}, {"scope": 1, "subject": 1, "day": 1, "blocks": 1})
        out = []
        async for doc in cursor:
            key = CounterKey(QuotaScope(doc["scope"]), doc["subject"], doc["day"])
            for block_id, block in (doc.get("blocks") or {}).items():
                until = block["until"]
                if until.tzinfo is None:  # the driver answers naive UTC datetimes by default
                    until = until.replace(tzinfo=UTC)
                out.append(OpenBlock(key, block_id, int(block["n"]), until))
        return out

    async def used(self, key: CounterKey) -> int:
        doc = await self.counters.find_one({"_id": key.id}, {"used": 1})
        return 0 if doc is None else int(doc["used"])

    async def subjects_of(self, day: str, limit: int = 1000) -> list[tuple[QuotaScope, str]]:
        """The counters of one quota day (for the metrics)."""
        cursor = self.counters.find({"day": day}, {"scope": 1, "subject": 1}).limit(limit)
        return [(QuotaScope(d["scope"]), d["subject"]) async for d in cursor]


def _seq_id(prefix: str, seq: int) -> str:
    return f"{prefix}|{seq:010d}"


class MongoQuotaLimits:
    def __init__(self, db: AsyncIOMotorDatabase[Document]) -> None:
        self.limits: AsyncIOMotorCollection[Document] = db["quota_limits"]

    async def ensure_indexes(self) -> None:
        await self.limits.create_index([("scope", ASCENDING), ("subject", ASCENDING), ("seq", ASCENDING)])

    async def history(self, scope: QuotaScope, subject: str) -> list[LimitOverride]:
        cursor = self.limits.find({"scope": scope.value, "subject": subject}).sort("seq", 1)
        return [
            LimitOverride(
                QuotaScope(d["scope"]),
                d["subject"],
                int(d["seq"]),
                int(d["limit"]),
                d["reason"],
                d["actor"],
                d["at"],
            )
            async for d in cursor
        ]

    async def append(self, override: LimitOverride) -> bool:
        try:
            await self.limits.insert_one(
                {
                    "_id": _seq_id(f"{override.scope}|{override.subject}", override.seq),
                    "scope": override.scope.value,
                    "subject": override.subject,
                    "seq": override.seq,
                    "limit": override.limit,
                    "reason": override.reason,
                    "actor": override.actor,
                    "at": override.at,
                }
            )
        except DuplicateKeyError:
            return False
        return True


def record_to_doc(r: authz.AuthorizationRecord) -> Document:
    return {
        "_id": _seq_id(r.product_id, r.seq),
        "product_id": r.product_id,
        "seq": r.seq,
        "kind": r.kind.value,
        "actor": r.actor,
        "at": r.at,
        "account": r.account,
        "grant_kind": None if r.grant_kind is None else r.grant_kind.value,
        "role": None if r.role is None else r.role.value,
        "permissions": list(r.permissions),
        "original_owner": r.original_owner,
        "reason": r.reason,
    }


def record_from_doc(d: Mapping[str, Any]) -> authz.AuthorizationRecord:
    return authz.AuthorizationRecord(
        product_id=d["product_id"],
        seq=int(d["seq"]),
        kind=authz.RecordKind(d["kind"]),
        actor=d["actor"],
        at=d["at"],
        account=d["account"],
        grant_kind=None if d.get("grant_kind") is None else authz.GrantKind(d["grant_kind"]),
        role=None if d.get("role") is None else authz.SpaceRole(d["role"]),
        permissions=tuple(d.get("permissions", ())),
        original_owner=d.get("original_owner"),
        reason=d.get("reason"),
    )


class MongoAuthorizationStore:
    def __init__(self, db: AsyncIOMotorDatabase[Document]) -> None:
        self.records_: AsyncIOMotorCollection[Document] = db["authorization_records"]

    async def ensure_indexes(self) -> None:
        await self.records_.create_index([("product_id", ASCENDING), ("seq", ASCENDING)])
        await self.records_.create_index([("account", ASCENDING), ("at", DESCENDING)])

    async def records(self, product_id: str) -> list[authz.AuthorizationRecord]:
        cursor = self.records_.find({"product_id": product_id}).sort("seq", 1)
        return [record_from_doc(d) async for d in cursor]

    async def product(self, product_id: str) -> authz.ProductAuthorization:
        return authz.fold(product_id, await self.records(product_id))

    async def append(self, record: authz.AuthorizationRecord) -> bool:
        try:
            await self.records_.insert_one(record_to_doc(record))
        except DuplicateKeyError:
            return False
        return True

    async def of_account(self, account: str, limit: int = 100) -> list[authz.AuthorizationRecord]:
        cursor = self.records_.find({"account": account}).sort("at", -1).limit(limit)
        return [record_from_doc(d) async for d in cursor]
