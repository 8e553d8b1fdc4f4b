"""ota's MongoDB repositories: single-document atomic writes, conditional on a `version` field, each
carrying the outbox entries of its transition.

Collections (one database per service):
- `firmware` (_id firmware id), `rollouts` (_id `release:region`), `devices` (_id device id; queried by
  product and region), `locks` (_id device id: the one channel upgrading now), `progress` (_id
  `release:region:stage`: the counters).
- `plans` (_id `release:region:stage:round:seq`): a stage's planned device ids, a few hundred per document,
  inserted with a counter-only outbox entry (`targeted` and `pending` + its size), so planning 100,000 devices
  is a few hundred inserts and inserting a chunk again counts nothing twice. `claimed` (ids handed to
  dispatchers, by conditional writes) only grows; a chunk claimed to its end is closed (`open` false) once
  every claimed id has its document. Stopping sets `cancelled` and moves the unclaimed ids from `pending` to
  `cancelled` in the same write (outbox).
- `upgrades` (_id `release:device`, so unique per release and device): created pending when the device is
  dispatched; ids a crash left claimed without a document are created by a later dispatcher after a grace
  period (duplicates ignored, so nothing is created twice).

Counters stay equal to a recount of the upgrade documents across crashes: a transition stores its counter
delta in the document's outbox, in the same write as the state. The relay applies a delta with `$inc` and
`$push: {applying: id}` (and the time, for `sweep`), conditional on the id not being in `applying` (so at
most once), then removes the entry from the outbox. `applying` forgets an id only once its entry is gone
from the upgrade document and it is older than the relay's grace period, so a relay holding a stale read (it
must finish a document within half the grace, or skip it) can never apply it again. Every query the service
makes is answered from an index (`ensure_indexes`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from datetime import time as day_time
from fractions import Fraction
from typing import Any

from motor.motor_asyncio import AsyncIOMotorCollection, AsyncIOMotorDatabase
from pymongo import ASCENDING, ReplaceOne, UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError

from fleet_contracts.device import OtaUpgradeStatus
from fleet_contracts.ota import DeviceUpgradeState, ReleaseStage, UpgradeType
from fleet_ota.domain import directory
from fleet_ota.domain.firmware import Firmware, FirmwareSpec
from fleet_ota.domain.release import (
    Canary,
    RegionPlan,
    RegionRollout,
    ReleaseTarget,
    RolloutStatus,
    StageCounts,
    Threshold,
)
from fleet_ota.domain.schedule import DispatchRate, Schedule, Window
from fleet_ota.domain.sweep import DirectoryEntry, Sweep, SweepClaim
from fleet_ota.domain.targeting import DeviceFact, DeviceRecord, PlanChunk
from fleet_ota.domain.upgrade import BUCKETS, DeviceUpgrade, upgrade_id
from fleet_ota.domain.upgrade import bucket as bucket_of
from fleet_ota.ports import Claim, CountedEntry
from fleet_ota.service_layer.outbox import counter_id

log = logging.getLogger(__name__)

Document = dict[str, Any]
Collection = AsyncIOMotorCollection[Document]
S = DeviceUpgradeState
_OPEN = [s.value for s in (S.PENDING, S.RETRYING, S.COMMANDED, S.UPGRADING, S.WAITING)]
_DUPLICATE_KEY = 11000


async def _conditional_save(
    col: Collection, _id: str, expected_version: int, fields: Document, outbox: Sequence[CountedEntry]
) -> bool:
    update: Document = {"$set": fields}
    if outbox:
        update["$push"] = {"outbox": {"$each": [e.to_document() for e in outbox]}}
        update["$set"] = {**fields, "relay": True}
    result = await col.update_one({"_id": _id, "version": expected_version}, update)
    return result.matched_count == 1


# --- firmware -------------------------------------------------------------------------------------------


def _firmware_doc(f: Firmware) -> Document:
    s = f.spec
    return {
        "_id": f.firmware_id,
        "product_id": s.product_id,
        "channel": s.channel,
        "version": s.version,
        "size_bytes": s.size_bytes,
        "md5": s.md5,
        "signature": s.signature,
        "url": s.url,
        "upgrade_type": int(s.upgrade_type),
        "packet_timeout_s": s.packet_timeout_s,
        "registered_at": f.registered_at,
        "registered_by": f.registered_by,
        "withdrawn_at": f.withdrawn_at,
    }


def _firmware(d: Mapping[str, Any]) -> Firmware:
    spec = FirmwareSpec(
        d["product_id"],
        d["channel"],
        d["version"],
        d["size_bytes"],
        d["md5"],
        d["signature"],
        d["url"],
        UpgradeType(d["upgrade_type"]),
        d["packet_timeout_s"],
    )
    return Firmware(d["_id"], spec, d["registered_at"], d["registered_by"], d.get("withdrawn_at"))


class FirmwareStore:
    def __init__(self, db: AsyncIOMotorDatabase[Document]) -> None:
        self.col: Collection = db["firmware"]

    async def get(self, firmware_id: str) -> Firmware | None:
        d = await self.col.find_one({"_id": firmware_id})
        return None if d is None else _firmware(d)

    async def add(self, firmware: Firmware, outbox: Sequence[CountedEntry]) -> bool:
        doc = {**_firmware_doc(firmware), "outbox": [e.to_document() for e in outbox]}
        if outbox:
            doc["relay"] = True
        try:
            await self.col.insert_one(doc)
        except DuplicateKeyError:
            return False
        return True

    async def mark_withdrawn(self, firmware: Firmware) -> None:
        await self.col.update_one(
            {"_id": firmware.firmware_id, "withdrawn_at": None},
            {"$set": {"withdrawn_at": firmware.withdrawn_at}},
        )


# --- rollouts -------------------------------------------------------------------------------------------


def _threshold(t: Threshold | None) -> Document | None:
    return None if t is None else {"rate": t.rate, "min_sample": t.min_sample}


def _plan_doc(p: RegionPlan) -> Document:
    w = p.schedule.window
    return {
        "verification_devices": list(p.verification_devices),
        "canary": None
        if p.canary is None
        else {
            "ratio": None if p.canary.ratio is None else str(p.canary.ratio),
            "quantity": p.canary.quantity,
        },
        "promote_at": _threshold(p.promote_at),
        "halt_at": _threshold(p.halt_at),
        "late_joiners": p.late_joiners,
        "schedule": {
            "start_at": p.schedule.start_at,
            "time_zone": p.schedule.time_zone,
            "window": None
            if w is None
            else {"start": w.start.isoformat(), "end": w.end.isoformat(), "weekdays": sorted(w.weekdays)},
        },
        "dispatch": {"per_minute": p.dispatch.per_minute, "jitter": p.dispatch.jitter},
    }


def _plan(region: str, d: Mapping[str, Any]) -> RegionPlan:
    c, s, w = d["canary"], d["schedule"], d["schedule"]["window"]
    return RegionPlan(
        region=region,
        verification_devices=tuple(d["verification_devices"]),
        canary=None
        if c is None
        else Canary(ratio=None if c["ratio"] is None else Fraction(c["ratio"]), quantity=c["quantity"]),
        promote_at=None if d["promote_at"] is None else Threshold(**d["promote_at"]),
        halt_at=None if d["halt_at"] is None else Threshold(**d["halt_at"]),
        late_joiners=d["late_joiners"],
        schedule=Schedule(
            start_at=s["start_at"],
            time_zone=s["time_zone"],
            window=None
            if w is None
            else Window(
                day_time.fromisoformat(w["start"]), day_time.fromisoformat(w["end"]), frozenset(w["weekdays"])
            ),
        ),
        dispatch=DispatchRate(**d["dispatch"]),
    )


def rollout_id(release_id: str, region: str) -> str:
    return f"{release_id}:{region}"


def _rollout_fields(r: RegionRollout) -> Document:
    return {
        "status": r.status.value,
        "stage": None if r.stage is None else r.stage.value,
        "stage_started_at": r.stage_started_at,
        "canary_started_at": r.canary_started_at,
        "full_started_at": r.full_started_at,
        "version": r.version,
        "halt_baseline": list(r.halt_baseline),
    }


def _rollout(d: Mapping[str, Any]) -> RegionRollout:
    t = d["target"]
    baseline = d.get("halt_baseline") or (0, 0)  # absent from rollouts stored before it existed
    return RegionRollout(
        release_id=d["release_id"],
        target=ReleaseTarget(t["firmware_id"], t["product_id"], t["channel"], t["version"]),
        plan=_plan(d["region"], d["plan"]),
        status=RolloutStatus(d["status"]),
        stage=None if d["stage"] is None else ReleaseStage(d["stage"]),
        stage_started_at=d["stage_started_at"],
        canary_started_at=d["canary_started_at"],
        full_started_at=d["full_started_at"],
        version=d["version"],
        halt_baseline=(int(baseline[0]), int(baseline[1])),
    )


class RolloutStore:
    def __init__(self, db: AsyncIOMotorDatabase[Document]) -> None:
        self.col: Collection = db["rollouts"]

    async def get(self, release_id: str, region: str) -> RegionRollout | None:
        d = await self.col.find_one({"_id": rollout_id(release_id, region)})
        return None if d is None else _rollout(d)

    async def of_release(self, release_id: str) -> list[RegionRollout]:
        return [
            _rollout(d) async for d in self.col.find({"release_id": release_id}).sort("region", ASCENDING)
        ]

    async def add(self, rollouts: Sequence[RegionRollout]) -> None:
        docs = [
            {
                "_id": rollout_id(r.release_id, r.region),
                "release_id": r.release_id,
                "region": r.region,
                "firmware_id": r.target.firmware_id,
                "target": {
                    "firmware_id": r.target.firmware_id,
                    "product_id": r.target.product_id,
                    "channel": r.target.channel,
                    "version": r.target.version,
                },
                "plan": _plan_doc(r.plan),
                "outbox": [],
                **_rollout_fields(r),
            }
            for r in rollouts
        ]
        await _insert_ignoring_duplicates(self.col, docs)

    async def save(
        self, rollout: RegionRollout, expected_version: int, outbox: Sequence[CountedEntry]
    ) -> bool:
        _id = rollout_id(rollout.release_id, rollout.region)
        return await _conditional_save(self.col, _id, expected_version, _rollout_fields(rollout), outbox)

    async def active_of_firmware(self, firmware_id: str) -> int:
        done = [RolloutStatus.STOPPED.value, RolloutStatus.COMPLETED.value]
        return await self.col.count_documents({"firmware_id": firmware_id, "status": {"$nin": done}})

    async def dispatching(self) -> list[RegionRollout]:
        return [_rollout(d) async for d in self.col.find({"status": RolloutStatus.RUNNING.value})]

    async def scheduled(self) -> list[RegionRollout]:
        return [_rollout(d) async for d in self.col.find({"status": RolloutStatus.SCHEDULED.value})]


# --- upgrades -------------------------------------------------------------------------------------------


def _upgrade_fields(u: DeviceUpgrade) -> Document:
    return {
        "state": u.state.value,
        "attempt": u.attempt,
        "version": u.version,
        "deadline": u.deadline,
        "remaining_s": u.remaining_s,
        "retry_at": u.retry_at,
        "commanded_at": u.commanded_at,
        "previous_commanded_at": u.previous_commanded_at,
        "progress_percent": u.progress_percent,
        "tuya_status": None if u.tuya_status is None else int(u.tuya_status),
        "tuya_done": u.tuya_done,
        "reported_version": u.reported_version,
        "reason": u.reason,
    }


def _upgrade(d: Mapping[str, Any]) -> DeviceUpgrade:
    return DeviceUpgrade(
        release_id=d["release_id"],
        region=d["region"],
        stage=ReleaseStage(d["stage"]),
        device_id=d["device_id"],
        product_id=d["product_id"],
        channel=d["channel"],
        target_version=d["target_version"],
        state=S(d["state"]),
        attempt=d["attempt"],
        version=d["version"],
        deadline=d["deadline"],
        remaining_s=d["remaining_s"],
        retry_at=d["retry_at"],
        commanded_at=d["commanded_at"],
        previous_commanded_at=d.get("previous_commanded_at"),  # absent: written before it was kept
        progress_percent=d["progress_percent"],
        tuya_status=None if d["tuya_status"] is None else OtaUpgradeStatus(d["tuya_status"]),
        tuya_done=d["tuya_done"],
        reported_version=d["reported_version"],
        reason=d["reason"],
    )


# Statements per update command: the local FerretDB 1.24 holds a pooled connection per statement and refuses
# commands of more than 64; MongoDB is as fast with several small commands in flight.
WRITE_CHUNK = 64
WRITE_CONCURRENCY = 4


async def bulk_update(
    col: Collection, ops: Sequence[UpdateOne | ReplaceOne[Document]], *, ordered: bool = False
) -> int:
    """`bulk_write` in commands of at most `WRITE_CHUNK` statements, a few in flight (or in order); returns
    how many documents the statements matched."""
    chunks = [ops[i : i + WRITE_CHUNK] for i in range(0, len(ops), WRITE_CHUNK)]
    if ordered:
        return sum([(await col.bulk_write(list(chunk), ordered=True)).matched_count for chunk in chunks])
    matched = 0
    for i in range(0, len(chunks), WRITE_CONCURRENCY):
        results = await asyncio.gather(
            *(col.bulk_write(list(c), ordered=False) for c in chunks[i : i + WRITE_CONCURRENCY])
        )
        matched += sum(r.matched_count for r in results)
    return matched


async def _insert_ignoring_duplicates(col: Collection, docs: Sequence[Document]) -> set[int]:
    """Insert; returns the indexes of the documents that already existed (every other error raises)."""
    if not docs:
        return set()
    try:
        await col.insert_many(docs, ordered=False)
    except BulkWriteError as e:
        errors = e.details.get("writeErrors", [])
        if any(w.get("code") != _DUPLICATE_KEY for w in errors):
            raise
        return {w["index"] for w in errors}
    return set()


# --- plans ----------------------------------------------------------------------------------------------

_CLAIM_TRIES = 8


class PlanStore:
    """Chunks: `claimed` (ids handed to dispatchers) only grows, by conditional writes; `full` once it
    reaches the end; `open` until every claimed id is known to have its upgrade document."""

    def __init__(self, db: AsyncIOMotorDatabase[Document]) -> None:
        self.col: Collection = db["plans"]
        self.sweeps_col: Collection = db["sweeps"]
        self.upgrades: Collection = db["upgrades"]

    async def add_sweep(self, sweep: Sweep, outbox: Sequence[CountedEntry]) -> None:
        doc = {
            "_id": sweep.sweep_id,
            "release_id": sweep.release_id,
            "region": sweep.region,
            "stage": sweep.stage.value,
            "batch": sweep.batch,
            "buckets": list(sweep.buckets),
            "start": sweep.start,
            "planned": sweep.planned,
            "cap": sweep.cap,
            "activated_by": sweep.activated_by,
            **_sweep_fields(sweep),
            "outbox": [e.to_document() for e in outbox],
        }
        if outbox:
            doc["relay"] = True
        await _insert_ignoring_duplicates(self.sweeps_col, [doc])

    async def sweeps(self, release_id: str, region: str) -> list[Sweep]:
        query = {"release_id": release_id, "region": region, "open": True}
        cursor = self.sweeps_col.find(query, {"outbox": 0}).sort("_id", ASCENDING)
        return [_sweep(d) async for d in cursor]

    async def get_sweep(self, sweep_id: str) -> Sweep | None:
        d = await self.sweeps_col.find_one({"_id": sweep_id}, {"outbox": 0})
        return None if d is None else _sweep(d)

    async def save_sweep(self, sweep: Sweep, expected_version: int, outbox: Sequence[CountedEntry]) -> bool:
        return await _conditional_save(
            self.sweeps_col, sweep.sweep_id, expected_version, _sweep_fields(sweep), outbox
        )

    async def add(self, chunks: Sequence[PlanChunk]) -> None:
        docs = [
            {
                "_id": c.chunk_id,
                "release_id": c.release_id,
                "region": c.region,
                "stage": c.stage.value,
                "batch": c.batch,
                "seq": c.seq,
                "devices": list(c.device_ids),
                "size": len(c.device_ids),
                "claimed": 0,
                "claimed_at": None,
                "full": False,
                "cancelled": False,
                "cancelled_from": None,
                "open": True,
                "outbox": [_count_entry(c.chunk_id, "planned", c, len(c.device_ids)).to_document()],
                "relay": True,
            }
            for c in chunks
        ]
        # a few commands in flight: 100,000 ids are 200 documents
        step = 50
        await asyncio.gather(
            *(_insert_ignoring_duplicates(self.col, docs[i : i + step]) for i in range(0, len(docs), step))
        )

    async def device_ids(self, release_id: str, region: str, *, besides: str) -> set[str]:
        query = {"release_id": release_id, "region": region, "batch": {"$ne": besides}}
        return {device_id async for d in self.col.find(query, {"devices": 1}) for device_id in d["devices"]}

    async def count_in_stage(self, release_id: str, region: str, stage: ReleaseStage, *, besides: str) -> int:
        query = {"release_id": release_id, "region": region, "stage": stage.value, "batch": {"$ne": besides}}
        return sum([d["size"] async for d in self.col.find(query, {"size": 1})])

    async def claim(
        self, release_id: str, region: str, limit: int, *, now: datetime, repair_before: datetime
    ) -> Claim | None:
        claimable = {
            "release_id": release_id,
            "region": region,
            "open": True,
            "full": False,
            "cancelled": False,
        }
        for _ in range(_CLAIM_TRIES):
            d = await self.col.find_one(claimable, {"outbox": 0}, sort=[("_id", ASCENDING)])
            if d is None:
                break
            start = d["claimed"]
            upto = min(start + limit, d["size"])
            taken = await self.col.update_one(
                {"_id": d["_id"], "claimed": start, "cancelled": False},
                {"$set": {"claimed": upto, "claimed_at": now, "full": upto == d["size"]}},
            )
            if taken.matched_count == 1:
                stage = ReleaseStage(d["stage"])
                return Claim(d["_id"], release_id, region, stage, tuple(d["devices"][start:upto]), upto)
        return await self._close(release_id, region, repair_before)

    async def _close(self, release_id: str, region: str, repair_before: datetime) -> Claim | None:
        """Close the chunks claimed to their end whose ids all have documents; hand out again the ids of a
        stale claim that never got theirs."""
        query = {
            "release_id": release_id,
            "region": region,
            "open": True,
            "$or": [{"full": True}, {"cancelled": True}],
        }
        for d in [d async for d in self.col.find(query, {"outbox": 0})]:
            ids = d["devices"][: d["claimed"]]
            cursor = self.upgrades.find(
                {"_id": {"$in": [upgrade_id(release_id, i) for i in ids]}}, {"device_id": 1}
            )
            have = {u["device_id"] async for u in cursor}
            missing = tuple(i for i in ids if i not in have)
            if not missing:
                await self.col.update_one(
                    {"_id": d["_id"], "claimed": d["claimed"]}, {"$set": {"open": False}}
                )
            elif d["claimed_at"] is not None and _aware(d["claimed_at"]) <= repair_before:
                stage = ReleaseStage(d["stage"])
                return Claim(d["_id"], release_id, region, stage, missing, d["claimed"], closing=True)
        return None

    async def fill(self, claim: Claim) -> bool:
        if claim.closing:
            # no projection: the local FerretDB refuses one on findAndModify (a closing write is rare)
            d = await self.col.find_one_and_update(
                {"_id": claim.chunk_id, "claimed": claim.claimed}, {"$set": {"open": False}}
            )
            if d is not None:
                return bool(d["cancelled"])
        now = await self.col.find_one({"_id": claim.chunk_id}, {"cancelled": 1})
        return now is not None and bool(now["cancelled"])

    async def cancel(self, release_id: str, region: str) -> int:
        query = {"release_id": release_id, "region": region, "cancelled": False}
        fields = {"devices": 0, "outbox": 0}
        cancelled = 0
        for d in [d async for d in self.col.find(query, fields)]:
            for _ in range(_CLAIM_TRIES):
                left = d["size"] - d["claimed"]
                update: Document = {"$set": {"cancelled": True, "cancelled_from": d["claimed"]}}
                if left:
                    entry = _count_entry(d["_id"], "cancelled", d, left, cancelled=True)
                    update["$push"] = {"outbox": entry.to_document()}
                    update["$set"]["relay"] = True
                done = await self.col.update_one(
                    {"_id": d["_id"], "claimed": d["claimed"], "cancelled": False}, update
                )
                if done.matched_count == 1:
                    cancelled += left
                    break
                reread = await self.col.find_one({"_id": d["_id"]}, fields)
                if reread is None or reread["cancelled"]:
                    break
                d = reread
        return cancelled

    async def has_open(self, release_id: str, region: str) -> bool:
        query = {"release_id": release_id, "region": region, "open": True}
        if await self.col.find_one(query, {"_id": 1}) is not None:
            return True
        return await self.sweeps_col.find_one(query, {"_id": 1}) is not None


def _sweep_fields(s: Sweep) -> Document:
    """A walk's changing state (the rest is fixed at planning)."""
    return {
        "phase": s.phase,
        "after": s.after,
        "claimed": s.claimed,
        "claims": [{"key": c.key, "devices": list(c.device_ids), "at": c.at} for c in s.claims],
        "ended": s.ended,
        "cancelled": s.cancelled,
        "open": s.open,
        "version": s.version,
    }


def _sweep(d: Mapping[str, Any]) -> Sweep:
    return Sweep(
        release_id=d["release_id"],
        region=d["region"],
        stage=ReleaseStage(d["stage"]),
        batch=d["batch"],
        buckets=tuple(d["buckets"]),
        start=d["start"],
        planned=d["planned"],
        cap=d["cap"],
        activated_by=None if d["activated_by"] is None else _aware(d["activated_by"]),
        phase=d["phase"],
        after=d["after"],
        claimed=d["claimed"],
        claims=tuple(SweepClaim(c["key"], tuple(c["devices"]), _aware(c["at"])) for c in d["claims"]),
        ended=d["ended"],
        cancelled=d["cancelled"],
        version=d["version"],
    )


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _count_entry(
    chunk_id: str, what: str, chunk: PlanChunk | Mapping[str, Any], n: int, *, cancelled: bool = False
) -> CountedEntry:
    """A chunk's counter-only outbox entry (applied once by the relay, like a device transition's delta)."""
    if isinstance(chunk, PlanChunk):
        release_id, region, stage = chunk.release_id, chunk.region, chunk.stage
    else:
        release_id, region, stage = chunk["release_id"], chunk["region"], ReleaseStage(chunk["stage"])
    delta = {"pending": -n, "cancelled": n} if cancelled else {"targeted": n, "pending": n}
    return CountedEntry.counter_only(f"ota:{chunk_id}:{what}", counter_id(release_id, region, stage), delta)


class UpgradeStore:
    def __init__(self, db: AsyncIOMotorDatabase[Document]) -> None:
        self.col: Collection = db["upgrades"]
        self.plans: Collection = db["plans"]
        self.sweeps: Collection = db["sweeps"]

    async def create(self, upgrades: Sequence[DeviceUpgrade]) -> list[DeviceUpgrade]:
        docs = [
            {
                "_id": u.upgrade_id,
                "release_id": u.release_id,
                "region": u.region,
                "stage": u.stage.value,
                "device_id": u.device_id,
                "product_id": u.product_id,
                "channel": u.channel,
                "target_version": u.target_version,
                "outbox": [],
                **_upgrade_fields(u),
            }
            for u in upgrades
        ]
        existed = await _insert_ignoring_duplicates(self.col, docs)
        return [u for i, u in enumerate(upgrades) if i not in existed]

    async def get(self, upgrade_id: str) -> DeviceUpgrade | None:
        d = await self.col.find_one({"_id": upgrade_id})
        return None if d is None else _upgrade(d)

    async def stages_of(self, release_id: str, device_ids: Sequence[str]) -> dict[str, ReleaseStage]:
        if not device_ids:
            return {}
        ids = [upgrade_id(release_id, d) for d in device_ids]
        cursor = self.col.find({"_id": {"$in": ids}}, {"device_id": 1, "stage": 1})
        return {d["device_id"]: ReleaseStage(d["stage"]) async for d in cursor}

    async def open_of_device(self, device_id: str) -> list[DeviceUpgrade]:
        cursor = self.col.find({"device_id": device_id, "state": {"$in": _OPEN}})
        return [_upgrade(d) async for d in cursor]

    async def save(
        self, upgrade: DeviceUpgrade, expected_version: int, outbox: Sequence[CountedEntry]
    ) -> bool:
        return await _conditional_save(
            self.col, upgrade.upgrade_id, expected_version, _upgrade_fields(upgrade), outbox
        )

    async def ready_to_command(
        self, release_id: str, region: str, now: datetime, limit: int
    ) -> list[DeviceUpgrade]:
        base = {"release_id": release_id, "region": region}
        pending = self.col.find({**base, "state": S.PENDING.value}).limit(limit)
        found = [_upgrade(d) async for d in pending]
        if len(found) < limit:
            retrying = self.col.find({**base, "state": S.RETRYING.value, "retry_at": {"$lte": now}})
            found += [_upgrade(d) async for d in retrying.limit(limit - len(found))]
        return found

    async def deadline_passed(self, now: datetime, limit: int) -> list[DeviceUpgrade]:
        states = [S.COMMANDED.value, S.UPGRADING.value]
        cursor = self.col.find({"state": {"$in": states}, "deadline": {"$lte": now}}).limit(limit)
        return [_upgrade(d) async for d in cursor]

    async def commanded_before(self, before: datetime, limit: int) -> list[DeviceUpgrade]:
        cursor = self.col.find({"state": S.COMMANDED.value, "commanded_at": {"$lte": before}}).limit(limit)
        return [_upgrade(d) async for d in cursor]

    async def upgrading_before(self, before: datetime, limit: int) -> list[DeviceUpgrade]:
        states = [S.UPGRADING.value, S.WAITING.value]
        query = {"state": {"$in": states}, "tuya_done": False, "commanded_at": {"$lte": before}}
        cursor = self.col.find(query).sort("commanded_at", ASCENDING).limit(limit)
        return [_upgrade(d) async for d in cursor]

    async def cancellable(self, release_id: str, region: str, limit: int) -> list[DeviceUpgrade]:
        states = [S.PENDING.value, S.RETRYING.value]
        query = {"release_id": release_id, "region": region, "state": {"$in": states}}
        return [_upgrade(d) async for d in self.col.find(query).limit(limit)]

    async def has_open(self, release_id: str, region: str) -> bool:
        query = {"release_id": release_id, "region": region, "state": {"$in": _OPEN}}
        return await self.col.find_one(query, {"_id": 1}) is not None

    async def done_unverified(self, limit: int) -> list[DeviceUpgrade]:
        cursor = self.col.find({"state": S.UPGRADING.value, "tuya_done": True}).limit(limit)
        return [_upgrade(d) async for d in cursor]

    async def recount(self, release_id: str) -> dict[tuple[str, ReleaseStage], StageCounts]:
        """A recount from the documents themselves (tests and audits: it scans the release): each upgrade
        document in its state's bucket, and each planned id without one as pending (cancelled once its chunk
        was stopped before the id was claimed)."""
        totals: dict[tuple[str, ReleaseStage], dict[str, int]] = {}
        created: dict[str, ReleaseStage] = {}
        fields = {"region": 1, "stage": 1, "state": 1, "device_id": 1}
        async for d in self.col.find({"release_id": release_id}, fields):
            c = totals.setdefault((d["region"], ReleaseStage(d["stage"])), dict.fromkeys(BUCKETS, 0))
            c[bucket_of(S(d["state"]))] += 1
            created[d["device_id"]] = ReleaseStage(d["stage"])
        # a walk: what it planned and has not claimed is pending (cancelled once stopped), and the ids of a
        # claim not confirmed yet without an upgrade in the walk's stage are pending
        async for d in self.sweeps.find({"release_id": release_id}, {"outbox": 0}):
            w = _sweep(d)
            c = totals.setdefault((w.region, w.stage), dict.fromkeys(BUCKETS, 0))
            if not w.ended:
                c["pending"] += max(w.planned - w.claimed, 0)
            c["cancelled"] += w.cancelled or 0
            for claim in w.claims:
                c["pending"] += sum(1 for i in claim.device_ids if created.get(i) != w.stage)
        async for d in self.plans.find({"release_id": release_id}, {"outbox": 0}):
            c = totals.setdefault((d["region"], ReleaseStage(d["stage"])), dict.fromkeys(BUCKETS, 0))
            cut = d["cancelled_from"] if d["cancelled"] else d["size"]
            for i, device_id in enumerate(d["devices"]):
                if device_id not in created:
                    c["pending" if i < cut else "cancelled"] += 1
        return {k: StageCounts(targeted=sum(v.values()), **v) for k, v in totals.items()}


# --- progress counters ----------------------------------------------------------------------------------


def _counts(d: Mapping[str, Any]) -> StageCounts:
    c = d.get("counts") or {}
    return StageCounts(targeted=c.get("targeted", 0), **{b: c.get(b, 0) for b in BUCKETS})


class ProgressStore:
    def __init__(self, db: AsyncIOMotorDatabase[Document]) -> None:
        self.col: Collection = db["progress"]

    async def open(self, release_id: str, region: str, stage: ReleaseStage) -> None:
        zeros = dict.fromkeys(("targeted", *BUCKETS), 0)
        with contextlib.suppress(DuplicateKeyError):  # a concurrent planner created it
            await self.col.update_one(
                {"_id": counter_id(release_id, region, stage)},
                {
                    "$setOnInsert": {
                        "release_id": release_id,
                        "region": region,
                        "stage": stage.value,
                        "counts": zeros,
                    }
                },
                upsert=True,
            )

    async def apply(self, entries: Sequence[CountedEntry], now: datetime) -> None:
        """Apply counter deltas, each at most once (its id stays in `applying` until `forget`)."""
        ops = [
            UpdateOne(
                # a plain array of ids: FerretDB 1.x mis-evaluates `$ne` on a path into an array of documents
                {"_id": e.counter_id, "applying": {"$ne": e.id}},
                {
                    "$inc": {f"counts.{k}": v for k, v in e.delta.items()},
                    "$push": {"applying": e.id, "applied_at": {"id": e.id, "at": now}},
                },
            )
            for e in entries
            if e.counter_id and e.delta
        ]
        await bulk_update(self.col, ops, ordered=True)

    async def counts(self, release_id: str, region: str, stage: ReleaseStage) -> StageCounts:
        d = await self.col.find_one({"_id": counter_id(release_id, region, stage)})
        return StageCounts() if d is None else _counts(d)

    async def of_release(self, release_id: str) -> dict[tuple[str, ReleaseStage], StageCounts]:
        cursor = self.col.find({"release_id": release_id}, {"applying": 0, "applied_at": 0})
        return {(d["region"], ReleaseStage(d["stage"])): _counts(d) async for d in cursor}

    async def applied(self, limit: int) -> list[tuple[str, list[Document]]]:
        """Counter documents with remembered ids: `(counter id, [{id, at}, ...])`."""
        cursor = self.col.find({"applying.0": {"$exists": True}}, {"applied_at": 1}).limit(limit)
        return [(d["_id"], list(d.get("applied_at") or [])) async for d in cursor]

    async def forget(self, cid: str, applied: Sequence[Document]) -> None:
        await self.col.update_one(
            {"_id": cid},
            {"$pullAll": {"applying": [a["id"] for a in applied], "applied_at": list(applied)}},
        )


# --- devices and channel locks ---------------------------------------------------------------------------


# new entries per insert batch: one intent document holding them (a few hundred KB, far from 16 MB)
INSERT_BATCH = 1000
INSERT_CONCURRENCY = 4  # batches in flight at once (each its own intent)
# fewer new entries than this (a device the events told of, its versions fetched) are written as changes and
# counted by the next pass with others: an insert batch each would add its id to its buckets' count documents
# (kept there for the grace period) many times a second
INSERT_MIN = 50


class DeviceStore:
    """`devices`: one entry per device and channel (_id its `sweep.position`), in its bucket, with the bucket
    it is counted in (`counted`); `device_counts`: a count per bucket (_id the bucket). Each entry's change is
    counted exactly once, in batches: one `$inc` per bucket per batch, guarded by the batch id (`applying`, a
    plain array), never a transaction.

    New entries are counted as they are inserted (`record_many`), a thousand at a time (a few at once):

    1. An intent in `counting` (`insert:<batch>`, small: its owner, time and sums), then the batch's entries
       in `device_batches` (_id the batch), each already marked counted in its bucket and inserted by the
       batch (`by`).
    2. The entries are inserted (an entry that exists already is not: it is written as a change, below).
    3. The batch's sums per bucket (of the entries it inserted) are sealed into the intent, then applied, then
       the batch and the intent are deleted. An intent older than `grace_s` (its writer died) is taken over
       by a counting pass: it inserts what is missing (the dead writer's inserts can only collide with
       these; a batch with no entries written yet gets an empty list, and its writer stops), sums the entries
       the batch inserted (`by`), seals and applies them. A writer that lost its intent stops.

    A change to an existing entry sets it and marks it `dirty`; `count_once` brings the counts up to date:

    1. It takes `counting` (one document: one batch at a time, so two replicas never count the same change),
       then reads dirty entries and records in it each one's counted bucket, new bucket and write version.
    2. It applies the batch's sums per bucket, guarded by the batch id, so a repeat after a crash adds nothing
       twice.
    3. It records each entry's new counted bucket, only if it is still the one the batch counted from (and
       clears `dirty` if no write came since), then frees `counting`. A batch left by a dead process is
       finished by the next pass after `grace_s`; a pass that took longer than half of it stops before
       applying (its batch is another's by then).

    Moves add up (`domain.directory.moves`), so an entry changed while its insert batch is not applied yet is
    counted right once both are.
    """

    def __init__(self, db: AsyncIOMotorDatabase[Document], *, grace_s: float = 60.0) -> None:
        self.col: Collection = db["devices"]
        self.counts_col: Collection = db["device_counts"]
        self.state: Collection = db["counting"]
        self.batches: Collection = db["device_batches"]
        self.facts: Collection = db["device_facts"]
        self.grace_s = grace_s

    async def learn(
        self, device_id: str, product_id: str, region: str, at: datetime, *, activated: bool, changed: bool
    ) -> None:
        first = {"product_id": product_id, "region": region, "activated_at": at, "activation_seen": activated}
        if not (activated or changed):
            # a device heard from (presence): noted once, its versions fetched once
            await self.facts.update_one(
                {"_id": device_id}, {"$setOnInsert": {**first, "stale": True, "mark": 1}}, upsert=True
            )
            return
        await self.facts.update_one(
            {"_id": device_id},
            {
                "$set": {"product_id": product_id, "region": region, "stale": True},
                "$inc": {"mark": 1},
                "$setOnInsert": {"activated_at": at, "activation_seen": activated},
            },
            upsert=True,
        )
        if activated:  # a later activation (a reset and a new pairing) wins; a replayed older one does not
            await self.facts.update_one(
                {"_id": device_id, "$or": [{"activated_at": {"$lt": at}}, {"activation_seen": False}]},
                {"$set": {"activated_at": at, "activation_seen": True}},
            )

    async def to_refresh(self, limit: int) -> list[DeviceFact]:
        cursor = self.facts.find({"stale": True}).limit(limit)
        return [
            DeviceFact(
                d["_id"],
                d["product_id"],
                d["region"],
                _aware(d["activated_at"]),
                d["activation_seen"],
                d["mark"],
            )
            async for d in cursor
        ]

    async def refreshing(self, product_id: str, region: str, since: datetime) -> bool:
        query = {"stale": True, "product_id": product_id, "region": region, "activated_at": {"$gt": since}}
        return await self.facts.find_one(query, {"_id": 1}) is not None

    async def refreshed(self, fact: DeviceFact, versions: dict[int, str]) -> None:
        known = await self.of_devices([fact.device_id])
        record = directory.refreshed(fact, known[0] if known else None, versions)
        if record is not None:
            await self.record(record)
        await self.facts.update_one({"_id": fact.device_id, "mark": fact.mark}, {"$set": {"stale": False}})

    async def record(self, device: DeviceRecord) -> None:
        await self.record_many([device])

    async def record_many(self, devices: Sequence[DeviceRecord]) -> None:
        entries = directory.entries(devices)
        # every bucket has its count document before any entry in it is counted (planning lists buckets)
        buckets = {e.bucket: e for e in entries}
        await bulk_update(
            self.counts_col,
            [
                UpdateOne(
                    {"_id": k},
                    {
                        "$setOnInsert": {
                            "product_id": e.product_id,
                            "region": e.region,
                            "channel": e.channel,
                            "version": e.version,
                            "count": 0,
                        }
                    },
                    upsert=True,
                )
                for k, e in buckets.items()
            ],
        )
        known = await self._known([e.position for e in entries])  # position -> what it holds now
        new = [e for e in entries if e.position not in known]
        raced: set[str] = set()  # not inserted here: inserted by another writer since, or too few
        if len(new) < INSERT_MIN:
            raced, new = {e.position for e in new}, []
        gate = asyncio.Semaphore(INSERT_CONCURRENCY)

        async def insert(batch: Sequence[directory.Entry]) -> set[str]:
            async with gate:
                return await self._insert_counted(batch)

        batches = [new[i : i + INSERT_BATCH] for i in range(0, len(new), INSERT_BATCH)]
        for existed in await asyncio.gather(*(insert(b) for b in batches)):
            raced |= existed
        # an entry that holds what it is given already is not written (an inventory imported again)
        await bulk_update(
            self.col,
            [
                UpdateOne(
                    {"_id": e.position},
                    {"$set": {**_entry_fields(e), "dirty": True}, "$inc": {"v": 1}},
                    upsert=True,
                )
                for e in entries
                if e.position in raced or (e.position in known and known[e.position] != _held(e))
            ],
        )

    async def _known(self, positions: Sequence[str]) -> dict[str, tuple[str, datetime]]:
        found: dict[str, tuple[str, datetime]] = {}
        for i in range(0, len(positions), INSERT_BATCH):
            query = {"_id": {"$in": list(positions[i : i + INSERT_BATCH])}}
            async for d in self.col.find(query, {"bucket": 1, "activated_at": 1}):
                found[d["_id"]] = (d["bucket"], _millis(d["activated_at"]))
        return found

    async def _insert_counted(self, entries: Sequence[directory.Entry]) -> set[str]:
        """Insert new entries already counted (the class's first list); returns the positions that existed
        (written as changes by the caller)."""
        b, owner, began = uuid.uuid4().hex, uuid.uuid4().hex, time.monotonic()
        docs = [
            {"_id": e.position, **_entry_fields(e), "counted": e.bucket, "by": b, "v": 1} for e in entries
        ]
        intent = f"insert:{b}"
        await self.state.insert_one(
            {
                "_id": intent,
                "kind": "insert",
                "batch": b,
                "owner": owner,
                "sums": None,
                "at": datetime.now(UTC),
            }
        )
        try:
            await self.batches.insert_one({"_id": b, "docs": docs})
        except DuplicateKeyError:  # a pass took the intent over before its entries were written: nothing was
            raise TimeoutError("directory insert batch taken over before it began") from None
        existed = await _insert_ignoring_duplicates(self.col, docs)
        sums = directory.moves((None, d["bucket"]) for i, d in enumerate(docs) if i not in existed)
        await self._settle_insert(intent, b, owner, sums, began)
        return {docs[i]["_id"] for i in existed}

    async def _settle_insert(
        self, intent: str, b: str, owner: str, sums: dict[str, int], began: float
    ) -> None:
        """Seal an insert batch's sums (only while the intent is still ours), apply them, drop the intent."""
        totals = [{"key": k, "n": n} for k, n in sums.items()]
        sealed = await self.state.update_one(
            {"_id": intent, "owner": owner, "sums": None}, {"$set": {"sums": totals}}
        )
        if sealed.matched_count != 1:
            return  # taken over: the pass that took it counts what the batch inserted
        await self._apply_sealed(intent, b, totals, began)

    async def _apply_sealed(self, intent: str, b: str, totals: list[Document], began: float) -> None:
        try:
            await self._apply(b, totals, began)
        except TimeoutError:
            log.warning("directory insert batch %s too slow: left to the next counting pass", b)
            return
        await self._forget([t["key"] for t in totals], datetime.now(UTC))
        await self.batches.delete_one({"_id": b})  # first: an intent without its entries is sealed already
        await self.state.delete_one({"_id": intent})

    async def _recover_inserts(self) -> int:
        """Finish the insert batches of dead writers (their intents older than the grace period)."""
        now = datetime.now(UTC)
        cutoff = now - timedelta(seconds=self.grace_s)
        recovered = 0
        async for intent in self.state.find({"kind": "insert", "at": {"$lte": cutoff}}).limit(10):
            owner, began = uuid.uuid4().hex, time.monotonic()
            took = await self.state.update_one(
                {"_id": intent["_id"], "owner": intent["owner"]}, {"$set": {"owner": owner, "at": now}}
            )
            if took.matched_count != 1:
                continue  # another pass took it
            b, totals = intent["batch"], intent["sums"]
            if totals is None:
                # the batch's entries as the writer wrote them, or none (then the writer can no longer write
                # them: it stops before inserting any entry)
                with contextlib.suppress(DuplicateKeyError):
                    await self.batches.insert_one({"_id": b, "docs": []})
                written = await self.batches.find_one({"_id": b})
                docs = [] if written is None else written["docs"]
                # what the dead writer did not insert is inserted now, so the batch's entries are final
                await _insert_ignoring_duplicates(self.col, docs)
                ids = [d["_id"] for d in docs]
                buckets = {d["_id"]: d["bucket"] for d in docs}
                mine = self.col.find({"_id": {"$in": ids}, "by": b}, {"_id": 1})
                sums = directory.moves([(None, buckets[d["_id"]]) async for d in mine])
                await self._settle_insert(intent["_id"], b, owner, sums, began)
                recovered += len(docs)
            else:
                await self._apply_sealed(intent["_id"], b, totals, began)
                recovered += sum(abs(t["n"]) for t in totals)
        return recovered

    async def counts(self, product_id: str, region: str, channel: int) -> dict[str, int]:
        query = {"product_id": product_id, "region": region, "channel": channel}
        return {
            d["version"]: d["count"] async for d in self.counts_col.find(query, {"version": 1, "count": 1})
        }

    async def page(
        self, buckets: Sequence[str], after: str, before: str | None, limit: int
    ) -> tuple[list[DirectoryEntry], bool]:
        window: Document = {"$gt": after}
        if before is not None:
            window["$lt"] = before

        async def of(key: str) -> list[Document]:
            # equality on an indexed field, an `_id` range, sorted by `_id`: a page reads about `limit` rows
            cursor = self.col.find({"bucket": key, "_id": window}, {"device_id": 1, "activated_at": 1})
            return [d async for d in cursor.sort("_id", ASCENDING).limit(limit)]

        pages = await asyncio.gather(*(of(k) for k in buckets))
        full = [p[-1]["_id"] for p in pages if len(p) >= limit]
        upto = min(full) if full else None  # past the shortest full page, a bucket may hold more
        merged = sorted(
            (d for p in pages for d in p if upto is None or d["_id"] <= upto), key=lambda d: d["_id"]
        )
        entries = [DirectoryEntry(d["_id"], d["device_id"], _aware(d["activated_at"])) for d in merged]
        return entries, bool(full)

    async def activated_after(self, buckets: Sequence[str], since: datetime) -> list[DeviceRecord]:
        docs = [
            d
            for key in buckets
            async for d in self.col.find(
                {"bucket": key, "activated_at": {"$gt": since}}, {"v": 0, "counted": 0}
            )
        ]
        return _records(docs)

    async def of_devices(self, device_ids: Sequence[str]) -> list[DeviceRecord]:
        if not device_ids:
            return []
        return _records([d async for d in self.col.find({"device_id": {"$in": list(device_ids)}})])

    async def count_once(self, limit: int = 500) -> int:
        """Bring the counts up to date for up to `limit` changed entries (and finish the insert batches of
        dead writers); returns how many entries were counted."""
        recovered = await self._recover_inserts()
        state = await self.state.find_one({"_id": "counting"})
        batch = None if state is None else state.get("batch")
        now = datetime.now(UTC)
        if batch is not None:
            if (now - _aware(batch["at"])).total_seconds() < self.grace_s:
                return recovered  # another pass is counting
            # its pass died: one pass takes the batch over (a conditional write) and finishes it
            took = await self.state.update_one(
                {"_id": "counting", "batch.id": batch["id"], "batch.at": batch["at"]},
                {"$set": {"batch.at": now}},
            )
            if took.matched_count != 1:
                return recovered
            if batch.get("items") is not None:
                try:
                    await self._finish(batch, time.monotonic())
                except TimeoutError:
                    return recovered
            await self._release(batch["id"])
            return recovered + len(batch.get("items") or [])
        if await self.col.find_one({"dirty": True}, {"_id": 1}) is None:
            return recovered
        b, began = uuid.uuid4().hex, time.monotonic()
        taken = {"id": b, "at": now, "items": None}
        if state is None:
            try:
                await self.state.insert_one({"_id": "counting", "batch": taken})
            except DuplicateKeyError:
                return recovered
        elif (
            await self.state.update_one({"_id": "counting", "batch": None}, {"$set": {"batch": taken}})
        ).matched_count != 1:
            return recovered
        # read only once the batch is ours: every earlier batch has recorded what it counted
        docs = [
            d async for d in self.col.find({"dirty": True}, {"bucket": 1, "counted": 1, "v": 1}).limit(limit)
        ]
        sums = directory.moves((d.get("counted"), d["bucket"]) for d in docs)
        # documents, not nested arrays (the local FerretDB refuses those)
        items = [{"id": d["_id"], "was": d.get("counted"), "to": d["bucket"], "v": d["v"]} for d in docs]
        sums_list = [{"key": k, "n": n} for k, n in sums.items()]
        recorded = await self.state.update_one(
            {"_id": "counting", "batch.id": b}, {"$set": {"batch.items": items, "batch.sums": sums_list}}
        )
        if recorded.matched_count != 1:
            return recovered  # too slow: the batch was given up
        try:
            await self._finish({"id": b, "items": items, "sums": sums_list}, began)
        except TimeoutError:
            return recovered
        await self._release(b)
        return recovered + len(docs)

    async def catch_up(self, budget_s: float = 10.0) -> None:
        """Count every change written so far (planning sizes a canary from the counts)."""
        until = time.monotonic() + budget_s
        while time.monotonic() < until:
            if not await self.count_once() and not await self._uncounted():
                return
            await asyncio.sleep(0.05)

    async def _uncounted(self) -> bool:
        """Some write is not counted yet: a dirty entry, or an insert batch not applied."""
        if await self.col.find_one({"dirty": True}, {"_id": 1}) is not None:
            return True
        return await self.state.find_one({"kind": "insert"}, {"_id": 1}) is not None

    async def _release(self, b: str) -> None:
        await self.state.update_one({"_id": "counting", "batch.id": b}, {"$set": {"batch": None}})

    async def _apply(self, b: str, totals: Sequence[Document], began: float) -> None:
        """Each bucket's sum once for batch `b` (a repeat finds `b` in `applying` and adds nothing)."""
        now = datetime.now(UTC)
        for total in totals:
            key, n = total["key"], total["n"]
            if time.monotonic() - began > self.grace_s / 2:
                raise TimeoutError("counting pass too slow: its batch is left to the next pass")
            with contextlib.suppress(DuplicateKeyError):  # the guard found it applied: the upsert collides
                await self.counts_col.update_one(
                    {"_id": key, "applying": {"$ne": b}},
                    {"$inc": {"count": n}, "$push": {"applying": b, "applied_at": {"id": b, "at": now}}},
                    upsert=True,
                )

    async def _finish(self, batch: Document, began: float) -> None:
        await self._apply(batch["id"], batch["sums"], began)
        # each entry by its id (FerretDB answers an `_id` lookup from its primary key; an `$in` with other
        # conditions reads the whole collection); only from what this batch counted from, so a late repeat
        # never moves an entry back; `dirty` stays on entries written since, whose counted bucket still moves
        items = batch["items"]
        matched = await bulk_update(
            self.col,
            [
                UpdateOne(
                    {"_id": item["id"], "counted": item["was"], "v": item["v"]},
                    {"$set": {"counted": item["to"]}, "$unset": {"dirty": ""}},
                )
                for item in items
            ],
        )
        if matched < len(items):
            await bulk_update(
                self.col,
                [
                    UpdateOne(
                        {"_id": item["id"], "counted": item["was"], "v": {"$ne": item["v"]}},
                        {"$set": {"counted": item["to"]}},
                    )
                    for item in items
                ],
            )
        await self._forget([total["key"] for total in batch["sums"]], datetime.now(UTC))

    async def _forget(self, keys: Sequence[str], now: datetime) -> None:
        """Batch ids older than the grace period are forgotten, unless their batch is still being finished
        (a pass that took it over may still be applying it; an insert batch until its intent is gone)."""
        cutoff = now - timedelta(seconds=self.grace_s)
        busy = {
            d.get("batch") if d["_id"] != "counting" else (d.get("batch") or {}).get("id")
            async for d in self.state.find({}, {"batch": 1})
        }
        async for d in self.counts_col.find({"_id": {"$in": list(keys)}}, {"applied_at": 1}):
            old = [a for a in d.get("applied_at") or [] if _aware(a["at"]) < cutoff and a["id"] not in busy]
            if old:
                await self.counts_col.update_one(
                    {"_id": d["_id"]}, {"$pullAll": {"applying": [a["id"] for a in old], "applied_at": old}}
                )


def _millis(at: datetime) -> datetime:
    """As the database keeps a time (UTC, to the millisecond)."""
    at = _aware(at).astimezone(UTC)
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


def _held(e: directory.Entry) -> tuple[str, datetime]:
    return e.bucket, _millis(e.activated_at)


def _entry_fields(e: directory.Entry) -> Document:
    return {
        "device_id": e.device_id,
        "channel": e.channel,
        "product_id": e.product_id,
        "region": e.region,
        "activated_at": e.activated_at,
        "version": e.version,
        "bucket": e.bucket,
    }


def _records(docs: Sequence[Mapping[str, Any]]) -> list[DeviceRecord]:
    """Directory entries (one per channel) as one record per device."""
    by_device: dict[str, DeviceRecord] = {}
    for d in docs:
        found = by_device.get(d["device_id"])
        versions = {**(found.versions if found else {}), int(d["channel"]): d["version"]}
        by_device[d["device_id"]] = DeviceRecord(
            d["device_id"], d["product_id"], d["region"], _aware(d["activated_at"]), versions
        )
    return list(by_device.values())


class LockStore:
    def __init__(self, db: AsyncIOMotorDatabase[Document]) -> None:
        self.col: Collection = db["locks"]

    async def acquire(self, device_id: str, channel: int, upgrade_id: str) -> bool:
        try:
            await self.col.insert_one({"_id": device_id, "channel": channel, "upgrade_id": upgrade_id})
        except DuplicateKeyError:
            held = await self.col.find_one({"_id": device_id})
            return held is not None and held["upgrade_id"] == upgrade_id
        return True

    async def release(self, device_id: str, upgrade_id: str) -> None:
        await self.col.delete_one({"_id": device_id, "upgrade_id": upgrade_id})


class PacingStore:
    """`pacing` (_id `release:region`): when the region's next command is due, shared by every replica; the
    project's (`:` + access id) and its lease (that id + `:lease`: which replica sends, until when)."""

    def __init__(self, db: AsyncIOMotorDatabase[Document]) -> None:
        self.col: Collection = db["pacing"]

    async def next_at(self, release_id: str, region: str) -> float | None:
        d = await self.col.find_one({"_id": rollout_id(release_id, region)})
        return None if d is None else float(d["next_at"])

    async def move(self, release_id: str, region: str, expected: float | None, to: float) -> bool:
        _id = rollout_id(release_id, region)
        if expected is None:
            try:
                await self.col.insert_one({"_id": _id, "next_at": to})
            except DuplicateKeyError:
                return False
            return True
        moved = await self.col.update_one({"_id": _id, "next_at": expected}, {"$set": {"next_at": to}})
        return moved.matched_count == 1

    async def give_back(self, release_id: str, region: str, seconds: float) -> None:
        await self.col.update_one({"_id": rollout_id(release_id, region)}, {"$inc": {"next_at": -seconds}})

    async def hold(self, release_id: str, region: str, holder: str, *, now: float, until: float) -> bool:
        # its own document (`_id` + `:lease`): the schedule's conditional writes match `next_at` only
        _id = f"{rollout_id(release_id, region)}:lease"
        mine_or_ended = {"_id": _id, "$or": [{"holder": holder}, {"until": {"$lte": now}}]}
        held = await self.col.update_one(mine_or_ended, {"$set": {"holder": holder, "until": until}})
        if held.matched_count:
            return True
        try:
            await self.col.insert_one({"_id": _id, "holder": holder, "until": until})
        except DuplicateKeyError:
            return False  # another replica holds it
        return True


async def ensure_indexes(db: AsyncIOMotorDatabase[Document]) -> None:
    """Every query above is answered from one of these."""
    await db["upgrades"].create_index(
        [("release_id", ASCENDING), ("region", ASCENDING), ("state", ASCENDING)]
    )
    await db["plans"].create_index(
        [("release_id", ASCENDING), ("region", ASCENDING), ("open", ASCENDING), ("full", ASCENDING)]
    )
    await db["plans"].create_index([("release_id", ASCENDING), ("region", ASCENDING), ("stage", ASCENDING)])
    await db["plans"].create_index([("relay", ASCENDING)], sparse=True)
    await db["upgrades"].create_index([("device_id", ASCENDING), ("state", ASCENDING)])
    await db["upgrades"].create_index([("state", ASCENDING), ("deadline", ASCENDING)])
    await db["upgrades"].create_index([("state", ASCENDING), ("commanded_at", ASCENDING)])
    await db["upgrades"].create_index(
        [("state", ASCENDING), ("tuya_done", ASCENDING), ("commanded_at", ASCENDING)]
    )
    await db["upgrades"].create_index([("state", ASCENDING), ("tuya_done", ASCENDING)])
    await db["upgrades"].create_index([("relay", ASCENDING)], sparse=True)
    await db["rollouts"].create_index([("release_id", ASCENDING), ("region", ASCENDING)])
    await db["rollouts"].create_index([("firmware_id", ASCENDING), ("status", ASCENDING)])
    await db["rollouts"].create_index([("status", ASCENDING)])
    await db["rollouts"].create_index([("relay", ASCENDING)], sparse=True)
    await db["firmware"].create_index([("relay", ASCENDING)], sparse=True)
    await db["progress"].create_index([("release_id", ASCENDING)])
    await db["sweeps"].create_index([("release_id", ASCENDING), ("region", ASCENDING), ("open", ASCENDING)])
    await db["sweeps"].create_index([("relay", ASCENDING)], sparse=True)
    # the directory: pages of a bucket in position order, late joiners, lookups by device, changes to count
    await db["devices"].create_index([("bucket", ASCENDING), ("_id", ASCENDING)])
    await db["devices"].create_index([("bucket", ASCENDING), ("activated_at", ASCENDING)])
    await db["devices"].create_index([("device_id", ASCENDING)])
    await db["devices"].create_index([("dirty", ASCENDING)])
    await db["device_facts"].create_index([("stale", ASCENDING)])
    await db["device_counts"].create_index(
        [("product_id", ASCENDING), ("region", ASCENDING), ("channel", ASCENDING)]
    )
