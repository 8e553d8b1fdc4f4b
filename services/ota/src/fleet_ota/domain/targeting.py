"""Which devices a stage of a region's rollout targets, and the one-channel-at-a-time rule.

Rules:
- A target is a device of the release's product, in the region, whose channel runs a lower version than the
  release's (a device on the target version or above, or whose version is unknown or unreadable, is not a
  target).
- Verification: only the named devices (still subject to the rule above).
- Canary: devices activated after the canary started are never added; the canary is a stable pseudo-random
  sample (ordered by a hash of release and device id, so re-planning after a crash picks the same devices).
- Full: devices activated after the full stage started join only when late joiners are configured.
- A device is upgraded on one channel at a time: it may be commanded only while no other channel of it is in
  flight (`may_command`).
- Verification devices and late joiners are planned as chunks of a few hundred device ids (`plan_chunks`); a
  canary or a full stage is a walk through the directory (`domain.sweep`). A device gets its own upgrade
  only when it is dispatched.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from fleet_contracts.ota import ReleaseStage
from fleet_ota.domain.firmware import CatalogError, Version, parse_version
from fleet_ota.domain.release import RegionRollout

Stage = ReleaseStage


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """What ota knows of a device (from status's events and the OpenAPI)."""

    device_id: str
    product_id: str
    region: str
    activated_at: datetime
    versions: dict[int, str]  # channel -> version the device runs


@dataclass(frozen=True, slots=True)
class DeviceFact:
    """What device events told ota about a device whose versions are to be fetched from the OpenAPI."""

    device_id: str
    product_id: str
    region: str
    activated_at: datetime
    activation_seen: bool  # an activation event (else: when the device was first seen)
    mark: int  # bumped by every event that may have changed its versions


def is_candidate(d: DeviceRecord, r: RegionRollout, target: Version) -> bool:
    if d.product_id != r.target.product_id or d.region != r.region:
        return False
    current = d.versions.get(r.target.channel)
    if current is None:
        return False
    parsed = _parsed(current)
    return parsed is not None and parsed < target  # a version we cannot read is not known to be lower


@lru_cache(maxsize=4096)
def _parsed(version: str) -> Version | None:
    """A fleet runs a handful of versions: planning 100,000 devices parses each once."""
    try:
        return parse_version(version)
    except CatalogError:
        return None


def versions_below(versions: Iterable[str], target: str) -> list[str]:
    """The versions (as the directory counts them) lower than the target; unreadable ones are not."""
    goal = parse_version(target)
    return sorted(v for v in versions if (parsed := _parsed(v)) is not None and parsed < goal)


def stage_targets(
    devices: Iterable[DeviceRecord], r: RegionRollout, *, exclude: set[str], in_stage: int = 0
) -> list[str]:
    """Device ids the current stage adds.

    `exclude`: devices already in the release (any stage); `in_stage`: how many of them the current stage has
    (re-planning after a crash tops a canary up to its size, never beyond). A canary's ratio applies to the
    region's eligible devices: those found plus those already in the release.
    """
    if r.stage is None:
        return []
    target = parse_version(r.target.version)
    found = [d for d in devices if d.device_id not in exclude and is_candidate(d, r, target)]
    match r.stage:
        case Stage.VERIFICATION:
            named = set(r.plan.verification_devices)
            return [d.device_id for d in found if d.device_id in named]
        case Stage.CANARY:
            assert r.plan.canary is not None
            assert r.canary_started_at is not None
            started = r.canary_started_at
            early = [d.device_id for d in found if d.activated_at <= started]
            size = r.plan.canary.size(len(early) + len(exclude))
            room = max(size - in_stage, 0)
            return sorted(early, key=lambda device_id: sample_key(r.release_id, device_id))[:room]
        case Stage.FULL:
            if r.plan.late_joiners or r.full_started_at is None:
                return [d.device_id for d in found]
            return [d.device_id for d in found if d.activated_at <= r.full_started_at]
    return []


def sample_key(release_id: str, device_id: str) -> bytes:
    return hashlib.blake2b(f"{release_id}:{device_id}".encode(), digest_size=8).digest()


def may_command(busy_channel: int | None, channel: int) -> bool:
    """One channel at a time: free, or already this channel's turn (a retry of the same upgrade)."""
    return busy_channel is None or busy_channel == channel


CHUNK_SIZE = 500  # device ids per plan chunk: small documents, few of them


@dataclass(frozen=True, slots=True)
class PlanChunk:
    """Device ids a stage planned, in the order they are dispatched. `batch` names one planning round of the
    stage (the same round planned again yields the same chunks, so a repeat inserts nothing twice)."""

    release_id: str
    region: str
    stage: Stage
    batch: str
    seq: int
    device_ids: tuple[str, ...]

    @property
    def chunk_id(self) -> str:
        return f"{self.release_id}:{self.batch}:{self.seq:05d}"


def plan_chunks(
    r: RegionRollout, batch: str, device_ids: Sequence[str], size: int = CHUNK_SIZE
) -> list[PlanChunk]:
    """The stage's chosen devices in chunks of `size` (the ids sorted, so a repeat yields the same chunks)."""
    assert r.stage is not None
    ordered = sorted(device_ids)
    return [
        PlanChunk(r.release_id, r.region, r.stage, batch, i // size, tuple(ordered[i : i + size]))
        for i in range(0, len(ordered), size)
    ]
