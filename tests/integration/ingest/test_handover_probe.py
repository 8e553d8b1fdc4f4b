"""The handover probe on the real Apache Pulsar: a partition's first message right after the subscription's
mark-delete position needs no hold; one with an earlier message still unacknowledged does."""

from __future__ import annotations

import asyncio

import pytest

from fleet_ingest.adapters.handover_probe import PulsarCursorProbe
from fleet_ingest.adapters.tuya_consumer import PulsarTuyaSource
from fleet_shared.provisioning import PulsarAdmin
from tests.integration.ingest.test_tuya_source import publish, receive
from tests.support import Stack

pytestmark = pytest.mark.integration


async def settled_soon(probe: PulsarCursorProbe, partition: str, first: tuple[int, int, int]) -> bool:
    """The probe's answer once the broker has the client's grouped acks (sent within 100 ms)."""
    for _ in range(30):
        if await probe.settled(partition, first):
            return True
        await asyncio.sleep(0.1)
    return False


async def test_the_probe_reads_the_subscriptions_mark_delete_position(
    stack: Stack,
    access_id: str,
    source: PulsarTuyaSource,
) -> None:
    await publish(stack, access_id, 4)
    await source.subscribe()
    got = await receive(source, 4)
    assert len(got) == 4
    partition = got[0].delivery.topic
    positions = [r.delivery.position for r in got]
    assert all(p is not None for p in positions)
    probe = PulsarCursorProbe(PulsarAdmin(stack.pulsar_admin_url), source.subscription)

    # A fresh subscription: nothing before the first message
    assert await probe.settled(partition, positions[0])  # type: ignore[arg-type]
    # m0 unacked: m1 (and m2) would need the hold
    assert not await probe.settled(partition, positions[1])  # type: ignore[arg-type]
    source.acknowledge([got[1]])  # an ack beyond the mark-delete position does not move it
    await asyncio.sleep(0.5)
    assert not await probe.settled(partition, positions[2])  # type: ignore[arg-type]
    source.acknowledge([got[0]])  # m0 and m1 acked: the mark-delete position moves to m1
    assert await settled_soon(probe, partition, positions[2])  # type: ignore[arg-type]
    assert not await probe.settled(partition, positions[3])  # type: ignore[arg-type]


async def test_the_probe_fails_loudly_on_an_unknown_partition(stack: Stack, unique: str) -> None:
    probe = PulsarCursorProbe(PulsarAdmin(stack.pulsar_admin_url), "nobody-sub")
    with pytest.raises(Exception, match="HTTP"):
        await probe.settled(f"persistent://public/default/none-{unique}-partition-0", (1, 0, -1))
