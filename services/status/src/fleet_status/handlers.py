"""Handlers: plain functions taking an event or a command and their dependencies."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from fleet_contracts.device import DeviceEvent
from fleet_status.adapters.mongo import ShadowStore
from fleet_status.adapters.tuya import CloudDevice, CloudDeviceSource
from fleet_status.domain.facts import facts_from_event
from fleet_status.domain.shadow import (
    BindingReport,
    BindingState,
    DeviceFacts,
    DpReading,
    Fact,
    NameReport,
    PresenceReport,
    StatusReport,
)
from fleet_status.writer import Settlement, ShadowWriter

log = logging.getLogger(__name__)


async def handle_device_event(event: DeviceEvent, message: Settlement | None, writer: ShadowWriter) -> None:
    """Queue the event's facts for the device's shadow; the writer acks the message once they are durable."""
    facts = facts_from_event(event)
    if facts is None:
        if message is not None:
            await message.ack()  # nothing status keeps (signal samples, unknown Tuya messages)
        return
    await writer.submit(facts, message, tenant=event.tenant, region=event.region)


def facts_from_cloud(cloud: CloudDevice) -> DeviceFacts:
    """The cloud's current view as facts timed at the moment it was asked (older device reports lose)."""
    t = cloud.fetched_at_ms
    if not cloud.exists:
        return DeviceFacts(cloud.device_id, (BindingReport(BindingState.REMOVED, t),))
    facts: list[Fact] = []
    if cloud.status:
        facts.append(
            StatusReport(tuple(DpReading(code, value, t) for code, value in cloud.status), source="cloud")
        )
    if cloud.online is not None:
        facts.append(PresenceReport(cloud.online, t, source="cloud"))
    if cloud.name:
        facts.append(NameReport(cloud.name, t))
    return DeviceFacts(cloud.device_id, tuple(facts), product_id=cloud.product_id)


async def reconcile_stale(
    shadows: ShadowStore,
    cloud: CloudDeviceSource,
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
