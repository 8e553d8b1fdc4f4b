"""How a canary or full stage finds its devices without planning reading every one of them.

Rules:
- Planning counts, it does not read devices: the directory keeps a count per bucket (product, region,
  channel, version). A stage's estimate is the sum over the buckets below the target (a canary: its size of
  that sum). Planning writes one walk document, whatever the fleet's size.
- Dispatchers walk the stage's buckets in position order (positions start with a hash of the device id: a
  pseudo-random order), from a start point fixed by the release to the end, then from the beginning back to
  the start. A canary is the first devices of that walk (the same release always walks the same way), the full
  stage takes all of them.
- A walk skips devices activated after its cutoff (a canary's start; the full stage's start: devices activated
  later join through late-joiner rounds), devices already in the release, and named verification devices.
- Each claim hands out the next ids in one conditional write (two dispatchers never take the same ids); a
  canary walk stops at its size.
- Counting, exact at every step: while the walk goes on the stage counts `max(planned, claimed)` as targeted
  (the ids not claimed yet as pending), once it ended exactly `claimed`. Ids a claim handed out whose upgrade
  turned out to belong to another stage are taken off when the claim is filled. Stopping moves what was
  planned and not claimed from pending to cancelled.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from fleet_contracts.ota import ReleaseStage

Stage = ReleaseStage
Delta = dict[str, int]


def rank(device_id: str) -> str:
    """16 hex digits of a hash of the device id: the walk's pseudo-random order."""
    return hashlib.blake2b(device_id.encode(), digest_size=8).hexdigest()


def position(device_id: str, channel: int) -> str:
    """Where a device's channel sits in the directory's order (unique per device and channel)."""
    return f"{rank(device_id)}|{device_id}|{channel}"


def bucket(product_id: str, region: str, channel: int, version: str) -> str:
    """The directory bucket of a device's channel: what planning counts and a walk pages through."""
    return f"{product_id}|{region}|{channel}|{version}"


def start_of(release_id: str) -> str:
    """Where a release's walks start (a point among the positions, fixed by the release)."""
    return rank(f"release:{release_id}")


@dataclass(frozen=True, slots=True)
class DirectoryEntry:
    position: str
    device_id: str
    activated_at: datetime


@dataclass(frozen=True, slots=True)
class SweepClaim:
    """Ids a dispatcher took and has not confirmed yet (their upgrade documents may not exist)."""

    key: str
    device_ids: tuple[str, ...]
    at: datetime


@dataclass(frozen=True, slots=True)
class Sweep:
    release_id: str
    region: str
    stage: Stage
    batch: str
    buckets: tuple[str, ...]
    start: str
    planned: int  # the estimate counted at planning
    cap: bool  # a canary: never more than `planned`
    activated_by: datetime | None  # devices activated after this are skipped
    phase: int = 0  # 0: from the start to the end; 1: from the beginning to the start
    after: str = ""  # the last position handled in this phase ("" none yet)
    claimed: int = 0
    claims: tuple[SweepClaim, ...] = ()
    ended: bool = False
    cancelled: int | None = None  # planned ids not claimed when the walk was stopped
    version: int = 0

    @property
    def sweep_id(self) -> str:
        return f"{self.release_id}:{self.batch}:sweep"

    @property
    def open(self) -> bool:
        """Something may still get an upgrade document: the walk goes on, or a claim is not confirmed."""
        return not self.ended or bool(self.claims)

    def window(self) -> tuple[str, str | None]:
        """Positions left in this phase: after the first, before the second (None: to the end)."""
        if self.phase == 0:
            return self.after or self.start, None
        return self.after, self.start

    @property
    def room(self) -> int | None:
        """How many more a capped walk may take (None: no cap)."""
        return max(self.planned - self.claimed, 0) if self.cap else None


@dataclass(frozen=True, slots=True)
class Step:
    sweep: Sweep
    taken: tuple[str, ...] = ()
    deltas: tuple[tuple[str, Delta], ...] = ()  # (entry suffix, counter delta), each applied once


def _bump(s: Sweep, **fields: Any) -> Sweep:
    return replace(s, version=s.version + 1, **fields)


def _ended(s: Sweep) -> tuple[Sweep, tuple[tuple[str, Delta], ...]]:
    """The walk is over: what was estimated and never found is no longer targeted."""
    short = s.planned - s.claimed
    deltas = (("ended", {"targeted": -short, "pending": -short}),) if short > 0 else ()
    return replace(s, ended=True), deltas


def take(
    s: Sweep, page: list[DirectoryEntry], more: bool, exclude: set[str], limit: int, now: datetime
) -> Step:
    """Walk on over `page` (the next entries of the window in position order; `more`: the window goes on past
    its last one): hand out up to `limit` ids, skipping what the rules skip."""
    if s.ended or s.cancelled is not None:
        return Step(s)
    room = limit if s.room is None else min(limit, s.room)
    taken: list[str] = []
    after = s.after
    visited = 0
    for entry in page:
        if len(taken) >= room:
            break
        after, visited = entry.position, visited + 1
        if s.activated_by is not None and entry.activated_at > s.activated_by:
            continue
        if entry.device_id in exclude:
            continue
        taken.append(entry.device_id)
    finished_phase = not more and visited == len(page)
    new = replace(s, after=after, claimed=s.claimed + len(taken))
    deltas: list[tuple[str, Delta]] = []
    excess = s.claimed + len(taken) - max(s.planned, s.claimed)
    if excess > 0:
        deltas.append((f"claim{s.claimed}", {"targeted": excess, "pending": excess}))
    if taken:
        new = replace(new, claims=(*new.claims, SweepClaim(f"c{s.claimed}", tuple(taken), now)))
    capped = new.room == 0
    if finished_phase and not capped and new.phase == 0:
        new = replace(new, phase=1, after="")
    elif (finished_phase and new.phase == 1) or capped:
        new, ended = _ended(new)
        deltas.extend(ended)
    if new == s:
        return Step(s)
    return Step(_bump(new), tuple(taken), tuple(deltas))


def fill(s: Sweep, key: str, other_stage: int) -> Step:
    """A claim's upgrade documents exist; `other_stage` of its ids turned out to be in another stage."""
    if not any(c.key == key for c in s.claims):
        return Step(s)  # confirmed already (a repair and the original dispatcher both got here)
    claims = tuple(c for c in s.claims if c.key != key)
    deltas = ((f"dup{key}", {"targeted": -other_stage, "pending": -other_stage}),) if other_stage else ()
    return Step(_bump(s, claims=claims), (), deltas)


def stop(s: Sweep) -> Step:
    """Stopped: nothing more is claimed; planned ids never claimed are cancelled."""
    if s.cancelled is not None:
        return Step(s)
    if s.ended:
        return Step(_bump(s, cancelled=0))
    left = max(s.planned - s.claimed, 0)
    deltas = (("cancelled", {"pending": -left, "cancelled": left}),) if left else ()
    return Step(_bump(s, ended=True, cancelled=left), (), deltas)


def end(s: Sweep) -> Step:
    """The stage was promoted: its walk claims nothing more (what it had not reached joins the next stage)."""
    if s.ended:
        return Step(s)
    new, deltas = _ended(s)
    return Step(_bump(new), (), deltas)


def stale(s: Sweep, before: datetime) -> SweepClaim | None:
    """A claim made before `before` and never confirmed: its dispatcher died; its ids are handed out again."""
    return next((c for c in s.claims if c.at <= before), None)
