"""ota's device directory: one entry per device and channel, in a bucket (product, region, channel, version),
and a count per bucket that planning reads instead of the devices.

Rules:
- An entry is where a device's channel sits in the walk's order (`sweep.position`) and the bucket its version
  puts it in. A write of several records naming the same device and channel keeps the last one.
- A device's region is where the directory already has it (the inventory's, or the first event's): an
  event's region is its project's data center (the envelope's `region`), not the device's, so a device heard
  from again is not moved to another region (a walk of its region would lose it, one of the other region
  may already have passed it).
- A count changes only by moves: an entry counted in one bucket (or in none: a new entry) and now in another
  takes one from the first and adds one to the second. Moves add up per bucket, so a batch of entries is one
  change per bucket whatever its size, and batches applied in any order give the same counts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from fleet_ota.domain.sweep import bucket, position
from fleet_ota.domain.targeting import DeviceFact, DeviceRecord


@dataclass(frozen=True, slots=True)
class Entry:
    device_id: str
    channel: int
    product_id: str
    region: str
    activated_at: datetime
    version: str

    @property
    def position(self) -> str:
        return position(self.device_id, self.channel)

    @property
    def bucket(self) -> str:
        return bucket(self.product_id, self.region, self.channel, self.version)


def entries(devices: Iterable[DeviceRecord]) -> list[Entry]:
    """The directory entries these records write (per device and channel, the last record wins)."""
    found: dict[tuple[str, int], Entry] = {}
    for d in devices:
        for channel, version in d.versions.items():
            found[(d.device_id, channel)] = Entry(
                d.device_id, channel, d.product_id, d.region, d.activated_at, version
            )
    return list(found.values())


def moves(changes: Iterable[tuple[str | None, str]]) -> dict[str, int]:
    """Per bucket, what the counts change by when entries counted in `was` (None: never counted) are counted
    in `to` instead; buckets that do not change are left out."""
    sums: dict[str, int] = {}
    for was, to in changes:
        if was == to:
            continue
        sums[to] = sums.get(to, 0) + 1
        if was is not None:
            sums[was] = sums.get(was, 0) - 1
    return {key: n for key, n in sums.items() if n}


def refreshed(fact: DeviceFact, known: DeviceRecord | None, versions: dict[int, str]) -> DeviceRecord | None:
    """The record a fetch of a device's versions writes (None: nothing to write). A device already known
    keeps its region, and its activation time unless an activation was seen (a first sighting is no
    activation: an imported time stands)."""
    if not versions:
        return None
    if known is None:
        return DeviceRecord(fact.device_id, fact.product_id, fact.region, fact.activated_at, versions)
    activated_at = fact.activated_at if fact.activation_seen else min(fact.activated_at, known.activated_at)
    return DeviceRecord(fact.device_id, fact.product_id, known.region, activated_at, versions)
