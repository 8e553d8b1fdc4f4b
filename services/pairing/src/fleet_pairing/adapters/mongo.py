"""MongoDB repositories of the pairing database: `sessions` (with their outbox) and `device_owners`.

A session write is one single-document operation: the whole new state, its version and the events it causes
(`outbox`) together, conditional on the version read (optimistic concurrency). A new session is an insert;
the unique indexes on `token` and `idempotency` make a repeated create lose cleanly (no multi-document
transaction needed). The write that appends events also sets `outbox_at` (its time), and the write that
empties the outbox unsets it: the sweep finds what a crash left by a range on that indexed field
(`outbox_at <= now - grace`), never by reading every session (an `outbox.0` condition, which neither
MongoDB nor the local server answers from an index). No secret is ever stored: the document holds the bare
Tuya token and region only; the token secret, assembled token, BLE token, Wi-Fi credentials and QR payload
never reach this module.
Every HTTP-facing query (by id, token, owner, home, state, day; newest first with an id cursor) has an index.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from motor.motor_asyncio import AsyncIOMotorCollection, AsyncIOMotorDatabase
from pymongo import ASCENDING, DESCENDING, ReturnDocument, UpdateOne
from pymongo.errors import DuplicateKeyError

from fleet_contracts.outbox import OutboxEntry, entries_of
from fleet_contracts.pairing import PairingMode, UnexpectedProductPolicy
from fleet_pairing.adapters.events import EventEncoder
from fleet_pairing.domain.causes import Failure, FailureCause
from fleet_pairing.domain.session import (
    DeviceOutcome,
    FactSource,
    OutcomeKind,
    PairingSession,
    Removal,
    SessionRequest,
    SessionState,
    Transition,
)
from fleet_pairing.ports import IdempotencyConflict

Document = dict[str, Any]
_NO_OUTBOX = {"outbox": 0}  # reads of the state: the events waiting for the relay are the relay's
# when events were last appended to the outbox; absent once it is empty (set and unset in those writes)
OUTBOX_AT = "outbox_at"
# the relay of a write: (session id, the version written, the whole outbox after that write)
Relay = Callable[[str, int, Sequence[OutboxEntry]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Unrelayed:
    """A session whose outbox still holds events, as read: its version and every entry, in order."""

    session_id: str
    version: int
    entries: list[OutboxEntry]


def unrelayed_filter(written_before: datetime | None) -> Document:
    """Sessions with events waiting (written before the time, if given): a range (or presence) on the
    indexed `outbox_at`, which MongoDB and the local server answer from the `(outbox_at, _id)` index."""
    if written_before is None:
        return {OUTBOX_AT: {"$gte": datetime(1970, 1, 1, tzinfo=UTC)}}
    return {OUTBOX_AT: {"$lte": written_before}}


# --- mapping --------------------------------------------------------------------------------------------


def idempotency_value(owner_uid: str, key: str | None, session_id: str) -> str:
    """Keys are scoped per owner; a session without one gets its own id (unique, so the index stays total)."""
    return f"key:{owner_uid}\x1f{key}" if key is not None else f"id:{session_id}"


def _outcome_to_doc(o: DeviceOutcome) -> Document:
    failure = None
    if o.failure is not None:
        f = o.failure
        failure = {"code": f.code, "cause": f.cause.value, "description": f.description, "hint": f.hint}
    return {
        "key": o.key,
        "kind": o.kind.value,
        "at": o.at,
        "source": o.source.value,
        "device_id": o.device_id,
        "product_id": o.product_id,
        "name": o.name,
        "failure": failure,
        "previous_owner_uid": o.previous_owner_uid,
        "removal": o.removal.value if o.removal else None,
    }


def _outcome_from_doc(d: Mapping[str, Any]) -> DeviceOutcome:
    f = d.get("failure")
    return DeviceOutcome(
        key=d["key"],
        kind=OutcomeKind(d["kind"]),
        at=d["at"],
        source=FactSource(d["source"]),
        device_id=d.get("device_id"),
        product_id=d.get("product_id"),
        name=d.get("name"),
        failure=Failure(f["code"], FailureCause(f["cause"]), f["description"], f.get("hint")) if f else None,
        previous_owner_uid=d.get("previous_owner_uid"),
        removal=Removal(d["removal"]) if d.get("removal") else None,
    )


def session_to_doc(session: PairingSession, outbox: Sequence[OutboxEntry], now: datetime) -> Document:
    r = session.request
    return {
        "_id": session.session_id,
        "version": session.version,
        "state": session.state.value,
        "owner_uid": r.owner_uid,
        "home_id": r.home_id,
        "mode": r.mode.value,
        "time_zone_id": r.time_zone_id,
        "expected_devices": r.expected_devices,
        "device_uuids": list(r.device_uuids),
        "allowed_products": sorted(r.allowed_products) if r.allowed_products is not None else None,
        "unexpected_policy": r.unexpected_policy.value,
        "idempotency_key": r.idempotency_key,
        "idempotency": idempotency_value(r.owner_uid, r.idempotency_key, session.session_id),
        "region": session.region,
        "token": session.token,
        "issued_at": session.issued_at,
        "day": session.issued_at.astimezone(UTC).strftime("%Y-%m-%d"),
        "expires_at": session.expires_at,
        "ended_at": session.ended_at,
        "updated_at": now,
        "outcomes": [_outcome_to_doc(o) for o in session.outcomes],
        "pending_removals": bool(session.pending_removals()),
        "outbox": [e.to_document() for e in outbox],
    }


def session_from_doc(doc: Mapping[str, Any]) -> PairingSession:
    allowed = doc.get("allowed_products")
    request = SessionRequest(
        owner_uid=doc["owner_uid"],
        home_id=doc["home_id"],
        mode=PairingMode(doc["mode"]),
        time_zone_id=doc["time_zone_id"],
        expected_devices=int(doc["expected_devices"]),
        device_uuids=tuple(doc.get("device_uuids") or ()),
        allowed_products=frozenset(allowed) if allowed is not None else None,
        unexpected_policy=UnexpectedProductPolicy(doc["unexpected_policy"]),
        idempotency_key=doc.get("idempotency_key"),
    )
    return PairingSession(
        session_id=doc["_id"],
        request=request,
        region=doc["region"],
        token=doc["token"],
        issued_at=doc["issued_at"],
        expires_at=doc["expires_at"],
        state=SessionState(doc["state"]),
        version=int(doc["version"]),
        outcomes=tuple(_outcome_from_doc(o) for o in doc.get("outcomes", [])),
        ended_at=doc.get("ended_at"),
    )


# --- sessions -------------------------------------------------------------------------------------------


class SessionStore:
    """The `sessions` collection: one document per pairing session. Implements `SessionRepository`.

    `relay`, when given, is called with the events of every successful write (after it is durable); events
    it fails to publish stay in the outbox for `OutboxRelay.sweep`.
    """

    def __init__(
        self,
        db: AsyncIOMotorDatabase[Document],
        encoder: EventEncoder,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        relay: Relay | None = None,
    ) -> None:
        self.sessions: AsyncIOMotorCollection[Document] = db["sessions"]
        self.encoder = encoder
        self.clock = clock
        self.relay = relay

    async def ensure_indexes(self) -> None:
        await self.sessions.create_index("token", unique=True)
        # every push finds its session by token. MongoDB answers that from the unique index; the local
        # server (FerretDB 1.24, fleet_devstack's patch) answers equality only from non-unique indexes and
        # otherwise reads the whole collection per push. The same key led by `token` serves both.
        await self.sessions.create_index([("token", ASCENDING), ("_id", ASCENDING)])
        await self.sessions.create_index("idempotency", unique=True)
        # listings, newest first, with an id cursor (`issued_at`, `_id`)
        await self.sessions.create_index(
            [("owner_uid", ASCENDING), ("issued_at", DESCENDING), ("_id", DESCENDING)]
        )
        await self.sessions.create_index(
            [("home_id", ASCENDING), ("issued_at", DESCENDING), ("_id", DESCENDING)]
        )
        await self.sessions.create_index(
            [("state", ASCENDING), ("issued_at", DESCENDING), ("_id", DESCENDING)]
        )
        await self.sessions.create_index([("day", ASCENDING), ("issued_at", DESCENDING), ("_id", DESCENDING)])
        await self.sessions.create_index([("issued_at", DESCENDING), ("_id", DESCENDING)])
        # the background work: expiry sweep, polling of active sessions, pending removals
        await self.sessions.create_index([("state", ASCENDING), ("expires_at", ASCENDING)])
        await self.sessions.create_index([("state", ASCENDING), ("_id", ASCENDING)])
        await self.sessions.create_index([("pending_removals", ASCENDING), ("_id", ASCENDING)])
        # the outbox sweep: sessions whose events wait for a relay (a crash, a broker outage)
        await self.sessions.create_index([(OUTBOX_AT, ASCENDING), ("_id", ASCENDING)])

    async def flag_unflagged_outboxes(self) -> int:
        """Give `outbox_at` to sessions an earlier version left events in without it (one read of the
        collection, at start), so the sweep finds them too; returns how many."""
        result = await self.sessions.update_many(
            {"outbox.0": {"$exists": True}, OUTBOX_AT: {"$exists": False}},
            {"$set": {OUTBOX_AT: datetime(1970, 1, 1, tzinfo=UTC)}},
        )
        return int(result.modified_count)

    async def _relay(self, session_id: str, version: int, entries: Sequence[OutboxEntry]) -> None:
        if self.relay is not None and entries:
            await self.relay(session_id, version, entries)

    async def add(self, opened: Transition) -> None:
        session = opened.session
        now = self.clock()
        outbox = self.encoder.entries(session.session_id, session.version, opened.events, now)
        doc = session_to_doc(session, outbox, now)
        if outbox:
            doc[OUTBOX_AT] = now
        try:
            await self.sessions.insert_one(doc)
        except DuplicateKeyError:
            r = session.request
            existing = (
                await self.by_idempotency_key(r.owner_uid, r.idempotency_key) if r.idempotency_key else None
            )
            if existing is None:  # a token collision, not a replay: never expected from Tuya
                raise
            raise IdempotencyConflict(existing) from None
        await self._relay(session.session_id, session.version, outbox)

    async def save(self, transition: Transition, expected_version: int) -> bool:
        session = transition.session
        now = self.clock()
        outbox = self.encoder.entries(session.session_id, session.version, transition.events, now)
        doc = session_to_doc(session, outbox, now)
        del doc["_id"], doc["outbox"]
        # entries of earlier writes not yet relayed stay: new ones are appended, in the same single write
        update: Document = {"$set": doc}
        if outbox:
            update["$push"] = {"outbox": {"$each": [e.to_document() for e in outbox]}}
            doc[OUTBOX_AT] = now
        # the write returns the outbox after it: the relay publishes earlier leftovers first, in order
        # (no projection: FerretDB 1.x does not implement `fields` in findAndModify)
        after = await self.sessions.find_one_and_update(
            {"_id": session.session_id, "version": expected_version},
            update,
            return_document=ReturnDocument.AFTER,
        )
        if after is None:
            return False
        await self._relay(session.session_id, int(after["version"]), entries_of(after))
        return True

    async def get(self, session_id: str) -> PairingSession | None:
        doc = await self.sessions.find_one({"_id": session_id}, _NO_OUTBOX)
        return session_from_doc(doc) if doc else None

    async def by_token(self, token: str) -> PairingSession | None:
        doc = await self.sessions.find_one({"token": token}, _NO_OUTBOX)
        return session_from_doc(doc) if doc else None

    async def by_idempotency_key(self, owner_uid: str, key: str) -> PairingSession | None:
        doc = await self.sessions.find_one({"idempotency": idempotency_value(owner_uid, key, "")})
        return session_from_doc(doc) if doc else None

    async def active(self, limit: int, *, after_id: str | None = None) -> list[PairingSession]:
        filter_: Document = {"state": SessionState.ACTIVE.value}
        if after_id is not None:
            filter_["_id"] = {"$gt": after_id}
        cursor = self.sessions.find(filter_).sort("_id", ASCENDING).limit(limit)
        return [session_from_doc(doc) async for doc in cursor]

    async def expiring(self, before: datetime, limit: int) -> list[PairingSession]:
        filter_ = {"state": SessionState.ACTIVE.value, "expires_at": {"$lte": before}}
        cursor = self.sessions.find(filter_).sort("expires_at", ASCENDING).limit(limit)
        return [session_from_doc(doc) async for doc in cursor]

    async def with_pending_removals(self, limit: int) -> list[PairingSession]:
        cursor = self.sessions.find({"pending_removals": True}).sort("_id", ASCENDING).limit(limit)
        return [session_from_doc(doc) async for doc in cursor]

    async def newest_first(
        self,
        *,
        owner_uid: str | None,
        home_id: str | None,
        state: SessionState | None,
        day: date | None,
        before: tuple[datetime, str] | None,
        limit: int,
    ) -> list[PairingSession]:
        """Implements `SessionListing`; each filter has an index ending in (`issued_at`, `_id`) descending."""
        filter_: Document = {}
        if owner_uid is not None:
            filter_["owner_uid"] = owner_uid
        if home_id is not None:
            filter_["home_id"] = home_id
        if state is not None:
            filter_["state"] = state.value
        if day is not None:
            filter_["day"] = day.isoformat()
        if before is not None:
            at, last_id = before
            filter_["$or"] = [{"issued_at": {"$lt": at}}, {"issued_at": at, "_id": {"$lt": last_id}}]
        found = self.sessions.find(filter_, _NO_OUTBOX).sort([("issued_at", DESCENDING), ("_id", DESCENDING)])
        return [session_from_doc(doc) async for doc in found.limit(limit)]

    # --- outbox -------------------------------------------------------------------------------------

    async def clear_outboxes(self, relayed: Sequence[tuple[str, int]]) -> None:
        """Empty the outbox of each (session id, version relayed) whose version is still the one relayed,
        and unset its `outbox_at`, in one command (one single-document update each, filtered on `_id`,
        which the local server answers from its index). At that version the outbox holds exactly what was
        relayed: every write that appends events moves the version. Where it moved, the newer write's own
        relay publishes the whole outbox (these entries too) and clears it, or leaves it for the sweep."""
        updates = [
            UpdateOne({"_id": sid, "version": version}, {"$set": {"outbox": []}, "$unset": {OUTBOX_AT: ""}})
            for sid, version in relayed
        ]
        if updates:
            await self.sessions.bulk_write(updates, ordered=False)

    async def unrelayed(self, limit: int, *, written_before: datetime | None = None) -> list[Unrelayed]:
        """Sessions whose outbox still holds events (a crash or broker outage between write and relay),
        those written before `written_before` if given; read from the `outbox_at` index, never a scan."""
        found = self.sessions.find(unrelayed_filter(written_before), {"outbox": 1, "version": 1})
        return [
            Unrelayed(doc["_id"], int(doc["version"]), entries_of(doc)) async for doc in found.limit(limit)
        ]


# --- device owners --------------------------------------------------------------------------------------


class DeviceOwnerStore:
    """The `device_owners` collection: the last known owner per device, ordered by Tuya's push time.

    Implements `DeviceOwners`. An update applies only if it is newer than what is stored (`at`), so a
    redelivered or late push never rolls an owner back.
    """

    def __init__(self, db: AsyncIOMotorDatabase[Document]) -> None:
        self.owners: AsyncIOMotorCollection[Document] = db["device_owners"]

    async def ensure_indexes(self) -> None:
        return None  # looked up by `_id` (the device id) only

    async def owner_of(self, device_id: str, at: datetime | None = None) -> str | None:
        doc = await self.owners.find_one({"_id": device_id})
        if doc is None:
            return None
        if doc.get("owner_uid") is None and at is not None and _same_instant(doc.get("at"), at):
            return doc.get("released_uid")
        return doc.get("owner_uid")

    async def _record(self, device_id: str, fields: Document, at: datetime, *, wins_ties: bool) -> None:
        # one write: an upsert conditional on being newer. A device not seen yet is inserted; a newer fact
        # updates; an older one finds no match, and its insert collides with the existing `_id`
        newer = {"_id": device_id, "at": {"$lte" if wins_ties else "$lt": at}}
        update = {"$set": {**fields, "at": at}}
        try:
            await self.owners.update_one(newer, update, upsert=True)
        except DuplicateKeyError:
            # it exists and is at least as new, or a concurrent writer inserted it first: once more as a
            # plain newer-only update (no insert), which applies only in the second case
            await self.owners.update_one(newer, update)

    async def record_bound(self, device_id: str, owner_uid: str, at: datetime) -> None:
        await self._record(device_id, {"owner_uid": owner_uid, "released_uid": None}, at, wins_ties=True)

    async def record_released(self, device_id: str, at: datetime, owner_uid: str | None = None) -> None:
        await self._record(device_id, {"owner_uid": None, "released_uid": owner_uid}, at, wins_ties=False)


def _same_instant(stored: datetime | None, at: datetime) -> bool:
    # the database keeps milliseconds and may hand back naive UTC
    if stored is None:
        return False
    if stored.tzinfo is None:
        stored = stored.replace(tzinfo=UTC)
    return abs((stored - at).total_seconds()) < 0.001
