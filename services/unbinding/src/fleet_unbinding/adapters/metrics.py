"""unbinding's domain metrics: each device's result (counted from the events it publishes, refusals by cause)
and today's quota counters (used and limit per account and per product, refreshed by a loop).

    fleet_unbinding_device_results_total{result, cause}   result: unbound | refused; cause: "" when unbound
    fleet_unbinding_quota_used{scope, subject}             units devices used today (the quota day)
    fleet_unbinding_quota_limit{scope, subject}            today's limit of that counter
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Gauge

from fleet_shared.pulsar.outbox import EventMetric, event_counter
from fleet_unbinding.domain.quota import Usage


def device_result(envelope: Mapping[str, Any]) -> Sequence[str] | None:
    kind = envelope.get("type")
    if kind == "unbinding.device.unbound.v1":
        return ("unbound", "")
    if kind == "unbinding.device.refused.v1":
        return ("refused", str((envelope.get("data") or {}).get("cause")))
    return None


def unbinding_metrics(registry: CollectorRegistry = REGISTRY) -> list[EventMetric]:
    results = event_counter(
        registry,
        "fleet_unbinding_device_results",
        "Devices' unbinding results recorded (refusals by cause)",
        ("result", "cause"),
    )
    return [EventMetric(results, device_result)]


_gauges: weakref.WeakKeyDictionary[CollectorRegistry, tuple[Gauge, Gauge]] = weakref.WeakKeyDictionary()


class QuotaGauges:
    """Today's counters as gauges. Each refresh replaces them all at once, so the counters of a quota day
    that ended disappear instead of showing yesterday's use."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        if registry not in _gauges:  # a service bootstrapped twice in one process (tests) shares them
            labels = ("scope", "subject")
            _gauges[registry] = (
                Gauge("fleet_unbinding_quota_used", "Quota units used today", labels, registry=registry),
                Gauge("fleet_unbinding_quota_limit", "Today's quota limit", labels, registry=registry),
            )
        self.used, self.limit = _gauges[registry]

    def show(self, usages: Sequence[Usage]) -> None:
        self.used.clear()
        self.limit.clear()
        for u in usages:
            self.used.labels(u.scope.value, u.subject).set(u.used)
            self.limit.labels(u.scope.value, u.subject).set(u.limit)
