"""The directory's entries and the moves that keep its counts per bucket: a batch of entries is one change per
bucket, and batches applied in any order (an insert batch finished late, changes counted meanwhile) add up to
the counts of where the entries are."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from fleet_ota.domain import directory
from fleet_ota.domain import sweep as sw
from fleet_ota.domain.targeting import DeviceFact, DeviceRecord

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 29, 12, tzinfo=UTC)


def test_entries_are_one_per_device_and_channel_and_the_last_record_wins() -> None:
    found = directory.entries(
        [
            DeviceRecord("d1", "p1", "EU", NOW, {0: "1.0", 9: "2.0"}),
            DeviceRecord("d2", "p1", "US", NOW, {0: "1.0"}),
            DeviceRecord("d1", "p1", "EU", NOW, {0: "1.1"}),  # the same device again: its channel 0 moved
        ]
    )
    by_position = {e.position: e for e in found}
    assert len(found) == len(by_position) == 3
    assert by_position[sw.position("d1", 0)].bucket == sw.bucket("p1", "EU", 0, "1.1")
    assert by_position[sw.position("d1", 9)].bucket == sw.bucket("p1", "EU", 9, "2.0")
    assert by_position[sw.position("d2", 0)].bucket == sw.bucket("p1", "US", 0, "1.0")


def test_new_entries_add_one_per_bucket_and_moves_take_one_from_where_they_were_counted() -> None:
    assert directory.moves([(None, "a"), (None, "a"), (None, "b")]) == {"a": 2, "b": 1}
    assert directory.moves([("a", "b"), ("a", "b"), ("b", "a")]) == {"a": -1, "b": 1}
    # an entry still counted where it is (a repeat, a rewrite of the same version) changes nothing
    assert directory.moves([("a", "a"), (None, "b"), ("b", "b")]) == {"b": 1}
    assert directory.moves([("a", "b"), ("b", "a")]) == {}  # buckets that end where they began are left out
    assert directory.moves([]) == {}


def test_batches_applied_in_any_order_count_where_the_entries_are() -> None:
    """Entries inserted counted in their first bucket (their batch's sums applied late, or before changes
    counted later) and then moved around: whatever order the batches' sums are applied in, every bucket ends
    with the entries in it."""
    rng = random.Random(13)
    buckets = ["1.0", "1.1", "1.2", "2.0"]
    where: dict[str, str] = {}  # entry -> bucket it is in (and, once its change is counted, counted in)
    batches: list[dict[str, int]] = []
    for _ in range(200):
        changes: list[tuple[str | None, str]] = []
        for _ in range(rng.randrange(1, 8)):
            entry = f"d{rng.randrange(40)}"
            to = rng.choice(buckets)
            changes.append((where.get(entry), to))
            where[entry] = to
        batches.append(directory.moves(changes))
    truth = Counter(where.values())
    for _ in range(5):
        rng.shuffle(batches)
        counts: Counter[str] = Counter()
        for sums in batches:
            counts.update(sums)
        assert {k: n for k, n in counts.items() if n} == dict(truth)


def test_a_fetch_of_versions_keeps_a_known_devices_region_and_imported_activation() -> None:
    """An event's region is its project's data center: a known device is not moved by it (a walk of its
    region would lose it); a first sighting is no activation, an activation seen is."""
    known = DeviceRecord("d1", "p1", "us", NOW - timedelta(days=9), {0: "1.0"})
    seen = DeviceFact("d1", "p1", "eu", NOW, False, 1)
    assert directory.refreshed(seen, known, {0: "1.1"}) == DeviceRecord(
        "d1", "p1", "us", NOW - timedelta(days=9), {0: "1.1"}
    )
    bound = DeviceFact("d1", "p1", "eu", NOW, True, 2)
    assert directory.refreshed(bound, known, {0: "1.1"}) == DeviceRecord("d1", "p1", "us", NOW, {0: "1.1"})
    assert directory.refreshed(seen, None, {0: "1.0"}) == DeviceRecord("d1", "p1", "eu", NOW, {0: "1.0"})
    assert directory.refreshed(seen, known, {}) is None  # nothing fetched: nothing written
