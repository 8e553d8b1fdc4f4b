"""pairing's domain metrics, counted from the events it publishes (`CountingPublisher`): each device's
outcome (paired, failed by Tuya's typed cause, an unexpected product, a late activation) and each session's
final state.

    fleet_pairing_device_outcomes_total{outcome, cause}    cause: the failure's cause, "" otherwise
    fleet_pairing_sessions_ended_total{state}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry

from fleet_shared.pulsar.outbox import EventMetric, event_counter

# event type -> the device outcome it records
_OUTCOMES = {
    "pairing.device.paired.v1": "paired",
    "pairing.device.failed.v1": "failed",
    "pairing.device.unexpected_product.v1": "unexpected_product",
    "pairing.device.late_activation.v1": "late",
}


def device_outcome(envelope: Mapping[str, Any]) -> Sequence[str] | None:
    outcome = _OUTCOMES.get(str(envelope.get("type")))
    if outcome is None:
        return None
    if outcome != "failed":
        return (outcome, "")
    return (outcome, str((envelope.get("data") or {}).get("cause") or "unknown"))


def session_end(envelope: Mapping[str, Any]) -> Sequence[str] | None:
    if envelope.get("type") != "pairing.session.ended.v1":
        return None
    return (str((envelope.get("data") or {}).get("state")),)


def pairing_metrics(registry: CollectorRegistry = REGISTRY) -> list[EventMetric]:
    outcomes = event_counter(
        registry,
        "fleet_pairing_device_outcomes",
        "Devices' pairing outcomes recorded (failed ones by Tuya's typed cause)",
        ("outcome", "cause"),
    )
    ended = event_counter(
        registry, "fleet_pairing_sessions_ended", "Pairing sessions that reached a final state", ("state",)
    )
    return [EventMetric(outcomes, device_outcome), EventMetric(ended, session_end)]
