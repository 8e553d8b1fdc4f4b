"""Turning domain events into outbox entries: deterministic ids, the topic the registry names, and for device
upgrades the progress counter delta the transition carries."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fleet_contracts import ota, topics
from fleet_contracts.envelope import service_source
from fleet_contracts.outbox import entry_for
from fleet_ota.domain.release import RegionRollout
from fleet_ota.domain.upgrade import Change
from fleet_ota.ports import CountedEntry

SOURCE = service_source("ota")

ReleaseEnvelope = (
    ota.ReleaseStartedEvent
    | ota.ReleasePausedEvent
    | ota.ReleaseResumedEvent
    | ota.ReleasePromotedEvent
    | ota.ReleaseHaltedEvent
    | ota.ReleaseFinishedEvent
    | ota.DeviceUpgradeStateChangedEvent
)


def _envelope(fact: ota.ReleaseFact, **attrs: Any) -> ReleaseEnvelope:
    match fact:
        case ota.ReleaseStarted():
            return ota.ReleaseStartedEvent.build(fact, **attrs)
        case ota.ReleasePaused():
            return ota.ReleasePausedEvent.build(fact, **attrs)
        case ota.ReleaseResumed():
            return ota.ReleaseResumedEvent.build(fact, **attrs)
        case ota.ReleasePromoted():
            return ota.ReleasePromotedEvent.build(fact, **attrs)
        case ota.ReleaseHalted():
            return ota.ReleaseHaltedEvent.build(fact, **attrs)
        case ota.ReleaseFinished():
            return ota.ReleaseFinishedEvent.build(fact, **attrs)
        case ota.DeviceUpgradeStateChanged():
            return ota.DeviceUpgradeStateChangedEvent.build(fact, **attrs)
    raise TypeError(f"no release event carries {type(fact).__name__}")


def counter_id(release_id: str, region: str, stage: ota.ReleaseStage) -> str:
    return f"{release_id}:{region}:{stage.value}"


def _entry(fact: ota.ReleaseFact, event_id: str, *, tenant: str, region: str, now: datetime) -> CountedEntry:
    envelope = _envelope(fact, source=SOURCE, tenant=tenant, region=region, event_id=event_id, time=now)
    return CountedEntry(entry_for(topics.OTA_RELEASE_EVENTS, envelope, default_key=fact.release_id))


def for_upgrade(change: Change, *, tenant: str, now: datetime) -> list[CountedEntry]:
    """The event of a device upgrade transition, carrying its counter delta (nothing if nothing changed)."""
    if change.event is None:
        return []
    u = change.upgrade
    entry = _entry(change.event, f"ota:{u.upgrade_id}:{u.version}", tenant=tenant, region=u.region, now=now)
    delta = change.counter_delta()
    if not delta:
        return [entry]
    return [CountedEntry(entry.event, counter_id(u.release_id, u.region, u.stage), delta)]


def for_rollout(
    rollout: RegionRollout, events: tuple[ota.ReleaseFact, ...], *, tenant: str, now: datetime
) -> list[CountedEntry]:
    """A rollout transition's events, ids fixed by the rollout and the version the transition produced."""
    return [
        _entry(
            e,
            f"ota:{rollout.release_id}:{rollout.region}:{rollout.version}:{i}",
            tenant=tenant,
            region=rollout.region,
            now=now,
        )
        for i, e in enumerate(events)
    ]


def for_firmware(
    registered: ota.FirmwareRegistered, *, tenant: str, region: str, now: datetime
) -> CountedEntry:
    envelope = ota.FirmwareRegisteredEvent.build(
        registered,
        source=SOURCE,
        tenant=tenant,
        region=region,
        event_id=f"ota:firmware:{registered.firmware_id}",
        time=now,
    )
    return CountedEntry(entry_for(topics.OTA_FIRMWARE_EVENTS, envelope, default_key=registered.firmware_id))
