"""Partition handovers on Tuya's Failover subscription, without a device's messages overtaking each other.

When a partition's active consumer changes (a replica starts, stops or dies), the broker rewinds the
partition to its first unacknowledged message after `activeConsumerFailoverDelayTimeMillis` (1 s by default)
and redelivers from there to the new consumer. Before that rewind it may already dispatch to the new consumer
what follows the old consumer's read position: the old consumer's last dispatch, completing after the switch,
triggers a read for the new one without a rewind (`PersistentDispatcherSingleActiveConsumer.
dispatchEntriesToConsumer`, Pulsar 4.0). Those messages come AFTER the ones the old consumer held unacked.
Published at once they overtake them (a device's events out of order); acked cumulatively they moved the
cursor past them, and the rewind redelivered nothing of them (lost: the scale-out e2e of issue 14).

So a partition this consumer has not received from before in this subscription, or whose positions jump
forward (someone else consumed in between), is held back for `hold_s`. If the broker rewinds meanwhile (a
position at or before one already received), the held messages from that position on are dropped, not acked:
the rewind delivers them again, in order, and the hold ends there. Otherwise the hold ends after `hold_s` and
the held messages go on. Only new partitions pay the delay: after a start or a takeover, `hold_s` once.

A hold can end early (`end_hold`) when the broker shows nothing before its first message is outstanding:
the subscription's mark-delete position is right before it (`settled`), so every earlier message was acked,
i.e. published by whoever held it, and no rewind can bring one that the held messages would overtake. That
is the case after a start with nothing left unacked (a deploy, a restart after a graceful stop); a takeover
from a replica that died holding messages keeps the full hold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from fleet_ingest.ports import Received

Position = tuple[int, int, int]


@dataclass(slots=True)
class Admitted:
    """What a received batch turned into: messages to process now (per partition in receive order, released
    holds first), messages dropped for the broker to redeliver, and how many holds began."""

    released: list[Received] = field(default_factory=list)
    dropped: list[Received] = field(default_factory=list)
    holds: list[tuple[str, Position]] = field(default_factory=list)
    """The partitions whose hold began, with the position of the first message held."""


@dataclass(slots=True)
class _Hold:
    until: float
    held: list[Received]
    first: Position


def settled(first: Position, mark_delete: tuple[int, int], ledgers: Mapping[int, int]) -> bool:
    """Nothing before `first` is unacknowledged on a subscription whose mark-delete position (everything up
    to it is acked) is `mark_delete` (ledger, entry); `ledgers` maps the topic's ledger ids to their entry
    counts (a ledger no longer listed was trimmed: consumed, or expired by retention). Conservative: on any
    doubt (acks beyond the mark-delete position, an earlier message of the same batch) it says no."""
    ledger, entry, batch_index = first
    marked = mark_delete
    if marked >= (ledger, entry):
        return True  # the first message itself (and all before it) was acked already
    if batch_index > 0:
        return False  # earlier messages of its batch may be outstanding
    if marked[0] == ledger:
        return marked[1] == entry - 1
    if entry != 0:
        return False
    # The first entry of a later ledger: the mark-delete must be its ledger's last entry, and every ledger in
    # between empty.
    if marked[0] in ledgers and ledgers[marked[0]] != marked[1] + 1:
        return False
    return all(count == 0 for lid, count in ledgers.items() if marked[0] < lid < ledger)


def _follows(last: Position, position: Position) -> bool:
    """`position` continues a stream that was at `last`: the same entry's next message, the next entry, or
    the first entry of a later ledger."""
    if position[0] == last[0]:
        return position[1] - last[1] in (0, 1)
    return position[0] > last[0] and position[1] == 0


class HandoverGuard:
    """Per partition of one subscription: the last position received and the hold, if any. Time is passed in
    (`now`, any monotonic clock), so the guard is pure; `hold_s` 0 turns it off."""

    def __init__(self, hold_s: float) -> None:
        self.hold_s = hold_s
        self._last: dict[str, Position] = {}
        self._holds: dict[str, _Hold] = {}

    @property
    def held(self) -> int:
        return sum(len(h.held) for h in self._holds.values())

    def held_from(self, partition: str) -> Position | None:
        """The position of the first message held on `partition` (None: no hold)."""
        hold = self._holds.get(partition)
        return hold.first if hold is not None else None

    def end_hold(self, partition: str) -> list[Received]:
        """End `partition`'s hold now (the broker showed it is not needed): its held messages, in order."""
        hold = self._holds.pop(partition, None)
        return hold.held if hold is not None else []

    def next_release(self) -> float | None:
        """When the earliest hold ends (None: nothing is held)."""
        return min((h.until for h in self._holds.values()), default=None)

    def release_due(self, now: float) -> list[Received]:
        """The held messages whose hold has ended, partition by partition in receive order."""
        out: list[Received] = []
        for partition in [p for p, h in self._holds.items() if h.until <= now]:
            out.extend(self._holds.pop(partition).held)
        return out

    def admit(self, batch: Sequence[Received], now: float) -> Admitted:
        result = Admitted(self.release_due(now))
        if self.hold_s <= 0:
            result.released.extend(batch)
            return result
        last_of, holds, released = self._last, self._holds, result.released
        for received in batch:
            delivery = received.delivery
            position = delivery.position
            if position is None:
                released.append(received)
                continue
            partition = delivery.topic
            last = last_of.get(partition)
            last_of[partition] = position
            hold = holds.get(partition)
            if last is not None and position <= last:
                # The broker went back: a rewind (or a reconnect's redelivery, which dedup absorbs). From here
                # it delivers in order again; what was held from this position on comes again with it.
                if hold is not None:
                    del holds[partition]
                    for one in hold.held:
                        if one.delivery.position is not None and one.delivery.position < position:
                            released.append(one)
                        else:
                            result.dropped.append(one)
                released.append(received)
            elif hold is not None:
                hold.held.append(received)
            elif last is None or not _follows(last, position):
                holds[partition] = _Hold(now + self.hold_s, [received], position)
                result.holds.append((partition, position))
            else:
                released.append(received)
        return result
