"""Whether a partition's handover hold is needed, from the broker's admin API (`service_layer.handover`).

Reads the partition's internal stats: the subscription's mark-delete position and the topic's ledgers. Only
where ingest can reach the admin API of the broker serving Tuya's topic: the simulator on our own bus. Tuya's
cloud offers no admin API, so there every new partition keeps its hold.
"""

from __future__ import annotations

import asyncio

from fleet_ingest.service_layer.handover import Position, settled
from fleet_shared.provisioning import PulsarAdmin


def _position(text: str) -> tuple[int, int]:
    ledger, entry = text.split(":")
    return int(ledger), int(entry)


class PulsarCursorProbe:
    def __init__(self, admin: PulsarAdmin, subscription: str) -> None:
        self._admin = admin
        self._subscription = subscription

    async def settled(self, partition: str, first: Position) -> bool:
        path = partition.replace("://", "/", 1) + "/internalStats"
        stats = await asyncio.to_thread(self._admin.get, path)
        cursor = stats.get("cursors", {}).get(self._subscription)
        if cursor is None:
            return False
        ledgers = {int(one["ledgerId"]): int(one["entries"]) for one in stats.get("ledgers", [])}
        return settled(first, _position(cursor["markDeletePosition"]), ledgers)
