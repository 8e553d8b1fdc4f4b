"""The events a merge causes, ready for the outbox: `shadow changed` and `presence changed`, with ids fixed by
the device and the shadow version they produced (a replayed merge makes the same ids, so consumers dedupe)."""

from __future__ import annotations

from datetime import datetime

from fleet_contracts import topics
from fleet_contracts.envelope import service_source
from fleet_contracts.outbox import OutboxEntry
from fleet_contracts.status import (
    DpChange,
    DpSample,
    PresenceChanged,
    PresenceChangedEvent,
    ShadowChanged,
    ShadowChangedEvent,
)
from fleet_status.domain.shadow import MergeResult

SOURCE = service_source("status")


def shadow_event_id(device_id: str, version: int) -> str:
    return f"status:{device_id}:shadow:{version}"


def presence_event_id(device_id: str, version: int) -> str:
    return f"status:{device_id}:presence:{version}"


def outbox_for(result: MergeResult, *, tenant: str, region: str, now: datetime) -> list[OutboxEntry]:
    """The events a merge causes, with ids fixed by the device and the shadow version they produced."""
    shadow = result.shadow
    entries: list[OutboxEntry] = []
    if result.dp_changes:
        changed = ShadowChangedEvent.build(
            ShadowChanged(
                device_id=shadow.device_id,
                product_id=shadow.product_id,
                shadow_version=shadow.version,
                changes=[
                    DpChange(
                        code=c.code,
                        dp_id=c.dp_id,
                        old=None
                        if c.old is None
                        else DpSample(value=c.old.value, device_time_ms=c.old.device_time_ms),
                        new=DpSample(value=c.new.value, device_time_ms=c.new.device_time_ms),
                    )
                    for c in result.dp_changes[:255]
                ],
            ),
            source=SOURCE,
            tenant=tenant,
            region=region,
            event_id=shadow_event_id(shadow.device_id, shadow.version),
            time=now,
        )
        entries.append(
            OutboxEntry(
                changed.id,
                topics.STATUS_SHADOW_EVENTS.name,
                shadow.device_id,
                topics.STATUS_SHADOW_EVENTS.encode(changed),
            )
        )
    if result.presence_change is not None:
        p = result.presence_change
        presence = PresenceChangedEvent.build(
            PresenceChanged(
                device_id=shadow.device_id,
                product_id=shadow.product_id,
                online=p.online,
                changed_at_ms=p.changed_at_ms,
                last_seen_ms=p.last_seen_ms,
                cause=p.cause,
            ),
            source=SOURCE,
            tenant=tenant,
            region=region,
            event_id=presence_event_id(shadow.device_id, shadow.version),
            time=now,
        )
        entries.append(
            OutboxEntry(
                presence.id,
                topics.STATUS_PRESENCE_EVENTS.name,
                shadow.device_id,
                topics.STATUS_PRESENCE_EVENTS.encode(presence),
            )
        )
    return entries
