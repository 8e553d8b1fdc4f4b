"""Handlers: plain functions taking an event or a command and their ports.

A device event becomes facts (`domain/facts.py`) queued on the shadow writer (`writer.py`), which merges
them in batches with `domain/shadow.py`'s `merge` and acks the message once the shadow is durable.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from fleet_contracts.device import DeviceEvent
from fleet_status.domain.facts import facts_from_cloud, facts_from_event
from fleet_status.domain.shadow import DeviceFacts, InactivityCheck, InactivityTimeoutSet
from fleet_status.ports import CloudDevices, DueShadows, Settlement, StaleShadows
from fleet_status.service_layer.writer import ShadowWriter

log = logging.getLogger(__name__)


async def handle_device_event(event: DeviceEvent, message: Settlement | None, writer: ShadowWriter) -> None:
    """Queue the event's facts for the device's shadow; the writer acks the message once they are durable."""
    facts = facts_from_event(event)
    if facts is None:
        if message is not None:
            await message.ack()  # nothing status keeps (signal samples, unknown Tuya messages)
        return
    await writer.submit(facts, message, tenant=event.tenant, region=event.region)


async def reconcile_stale(
    shadows: StaleShadows,
    cloud: CloudDevices,
    writer: ShadowWriter,
    *,
    stale_after: timedelta,
    limit: int,
) -> int:
    """Refresh shadows not updated for `stale_after` from the OpenAPI; a device the cloud no longer has is
    marked removed. Returns how many shadows were looked at."""
    now = datetime.now(UTC)
    device_ids = await shadows.stale(now - stale_after, limit)
    seen: list[str] = []
    for device_id in device_ids:
        view = await cloud.fetch(device_id)
        if view is None:
            continue
        seen.append(device_id)
        # through the writer, so the shadow's own order and concurrency rules apply
        await writer.submit(facts_from_cloud(view), None, tenant=writer.tenant, region=writer.region)
    # shadows the cloud agreed with get no write: mark them fresh so they are not asked again at once
    await shadows.touch(seen, datetime.now(UTC))
    if device_ids:
        log.info("reconciled %d of %d stale shadows", len(seen), len(device_ids))
    return len(device_ids)


async def find_inactive(shadows: DueShadows, writer: ShadowWriter, *, now: datetime, limit: int) -> int:
    """Queue an inactivity check for devices whose deadline has passed (at most `limit`); the writer merges it
    like any fact, so a report that arrived meanwhile wins. Returns how many were due."""
    due = await shadows.due(int(now.timestamp() * 1000), limit)
    for device_id, deadline_ms in due:
        facts = DeviceFacts(device_id, (InactivityCheck(deadline_ms),))
        await writer.submit(facts, None, tenant=writer.tenant, region=writer.region)
    if due:
        log.info("%d devices passed their inactivity deadline", len(due))
    return len(due)


async def set_inactivity_timeout(
    writer: ShadowWriter, device_id: str, timeout_s: float | None, *, now: datetime
) -> None:
    """An operator sets the device's own inactivity timeout (seconds, 0: never) or clears it (None: its
    product's). Applied by the writer with the shadow's ordering rules (the latest command wins)."""
    if timeout_s is not None and timeout_s < 0:
        raise ValueError("an inactivity timeout is 0 (never) or more seconds")
    ms = None if timeout_s is None else round(timeout_s * 1000)
    facts = DeviceFacts(device_id, (InactivityTimeoutSet(ms, int(now.timestamp() * 1000)),))
    await writer.submit(facts, None, tenant=writer.tenant, region=writer.region)
