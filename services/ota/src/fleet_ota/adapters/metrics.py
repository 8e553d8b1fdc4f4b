"""ota's domain metrics, counted from the events it publishes (`CountingPublisher`): device upgrades entering
each state per data-center region (a release's progress), and each region's release events.

    fleet_ota_device_upgrades_total{region, state}   state: pending, commanded, ..., succeeded, failed
    fleet_ota_release_events_total{region, event}    event: started, paused, promoted, halted, finished, ...
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry

from fleet_shared.pulsar.outbox import EventMetric, event_counter

_RELEASE_EVENT = "ota.release."


def _region(envelope: Mapping[str, Any]) -> str:
    return str((envelope.get("data") or {}).get("tuya_region") or "all")


def upgrade_state(envelope: Mapping[str, Any]) -> Sequence[str] | None:
    if envelope.get("type") != "ota.device_upgrade.state_changed.v1":
        return None
    return (_region(envelope), str((envelope.get("data") or {}).get("state")))


def release_event(envelope: Mapping[str, Any]) -> Sequence[str] | None:
    kind = str(envelope.get("type"))
    if not kind.startswith(_RELEASE_EVENT):
        return None
    return (_region(envelope), kind.removeprefix(_RELEASE_EVENT).split(".")[0])


def ota_metrics(registry: CollectorRegistry = REGISTRY) -> list[EventMetric]:
    upgrades = event_counter(
        registry,
        "fleet_ota_device_upgrades",
        "Device upgrades that entered a state, per data-center region",
        ("region", "state"),
    )
    releases = event_counter(
        registry, "fleet_ota_release_events", "Releases' events per data-center region", ("region", "event")
    )
    return [EventMetric(upgrades, upgrade_state), EventMetric(releases, release_event)]
