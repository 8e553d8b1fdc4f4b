"""The domain metrics fed by published events: pairing's outcomes by cause, unbinding's results by cause and
its quota gauges, ota's upgrades by region and state. Real envelopes from the contracts go through the
CountingPublisher; a failed publish counts nothing."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from fleet_contracts.envelope import Envelope, to_json_bytes
from fleet_contracts.ota import (
    DeviceUpgradeState,
    DeviceUpgradeStateChanged,
    DeviceUpgradeStateChangedEvent,
    ReleaseHalted,
    ReleaseHaltedEvent,
    ReleaseStage,
)
from fleet_contracts.outbox import OutboxEntry
from fleet_contracts.pairing import (
    DevicePaired,
    DevicePairedEvent,
    PairingFailed,
    PairingFailedEvent,
    PairingSessionEnded,
    PairingSessionEndedEvent,
    PairingSessionState,
)
from fleet_contracts.unbinding import (
    BatchDeviceRefused,
    BatchDeviceRefusedEvent,
    BatchDeviceUnbound,
    BatchDeviceUnboundEvent,
    RefusalCause,
)
from fleet_ota.adapters.metrics import ota_metrics
from fleet_pairing.adapters.metrics import pairing_metrics
from fleet_shared.pulsar.outbox import CountingPublisher, EventMetric
from fleet_unbinding.adapters.metrics import QuotaGauges, unbinding_metrics
from fleet_unbinding.domain.quota import QuotaScope, Usage

pytestmark = pytest.mark.unit


class Published:
    def __init__(self, *, fail: bool = False) -> None:
        self.entries: list[OutboxEntry] = []
        self.fail = fail

    async def publish(self, entries: Sequence[OutboxEntry]) -> None:
        if self.fail:
            raise ConnectionError("bus down")
        self.entries.extend(entries)


def entry(envelope: Envelope[Any]) -> OutboxEntry:
    return OutboxEntry(envelope.id, "persistent://fleet/test/events", "k", to_json_bytes(envelope))


def build(cls: type[Envelope[Any]], data: Any) -> Envelope[Any]:
    return cls.build(data, source="test", tenant="t", region="eu")


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


PAIRED = DevicePaired(token="tok1", home_id="h1", session_id="s1", device_id="dev1", product_id="p1")


async def test_pairing_counts_outcomes_by_cause_and_sessions_by_state() -> None:
    registry = CollectorRegistry()
    publisher = CountingPublisher(Published(), pairing_metrics(registry))
    failed = PairingFailed(
        token="tok1", home_id="h1", tuya_error_code="3", cause="wrong_wifi_password", device_id="dev2"
    )
    ended = PairingSessionEnded(
        token="tok1",
        home_id="h1",
        state=PairingSessionState.PARTIALLY_SUCCEEDED,
        paired_devices=1,
        failed_devices=1,
        unexpected_devices=0,
    )
    await publisher.publish(
        [
            entry(build(DevicePairedEvent, PAIRED)),
            entry(build(PairingFailedEvent, failed)),
            entry(build(PairingFailedEvent, failed)),
            entry(build(PairingSessionEndedEvent, ended)),
        ]
    )
    outcomes = "fleet_pairing_device_outcomes_total"
    assert sample(registry, outcomes, outcome="paired", cause="") == 1
    assert sample(registry, outcomes, outcome="failed", cause="wrong_wifi_password") == 2
    ended_total = "fleet_pairing_sessions_ended_total"
    assert sample(registry, ended_total, state="partially_succeeded") == 1


async def test_nothing_is_counted_when_the_publish_fails() -> None:
    registry = CollectorRegistry()
    publisher = CountingPublisher(Published(fail=True), pairing_metrics(registry))
    with pytest.raises(ConnectionError):
        await publisher.publish([entry(build(DevicePairedEvent, PAIRED))])
    assert sample(registry, "fleet_pairing_device_outcomes_total", outcome="paired", cause="") is None


async def test_unbinding_counts_results_by_cause() -> None:
    registry = CollectorRegistry()
    inner = Published()
    publisher = CountingPublisher(inner, unbinding_metrics(registry))
    unbound = BatchDeviceUnbound(batch_id="b1", device_id="d1", operator_id="brand")
    refused = BatchDeviceRefused(
        batch_id="b1", device_id="d2", operator_id="brand", cause=RefusalCause.QUOTA_EXCEEDED
    )
    entries = [entry(build(BatchDeviceUnboundEvent, unbound)), entry(build(BatchDeviceRefusedEvent, refused))]
    await publisher.publish(entries)
    assert inner.entries == entries  # published as given
    results = "fleet_unbinding_device_results_total"
    assert sample(registry, results, result="unbound", cause="") == 1
    assert sample(registry, results, result="refused", cause="quota_exceeded") == 1


def test_quota_gauges_show_todays_counters_only() -> None:
    registry = CollectorRegistry()
    gauges = QuotaGauges(registry)
    now = datetime(2026, 11, 29, 12, tzinfo=UTC)
    yesterday = Usage(QuotaScope.ACCOUNT, "brand", "2026-11-28", 100, 97, now)
    gauges.show([yesterday])
    assert sample(registry, "fleet_unbinding_quota_used", scope="account", subject="brand") == 97
    gauges.show([Usage(QuotaScope.PRODUCT, "plug", "2026-11-29", 50, 3, now)])
    assert sample(registry, "fleet_unbinding_quota_used", scope="account", subject="brand") is None
    assert sample(registry, "fleet_unbinding_quota_used", scope="product", subject="plug") == 3
    assert sample(registry, "fleet_unbinding_quota_limit", scope="product", subject="plug") == 50
    assert QuotaGauges(registry).used is gauges.used  # a second service in the process shares them


async def test_ota_counts_upgrades_by_region_and_state_and_release_events() -> None:
    registry = CollectorRegistry()
    publisher = CountingPublisher(Published(), ota_metrics(registry))
    changed = DeviceUpgradeStateChanged(
        release_id="r1",
        tuya_region="eu",
        device_id="d1",
        channel=0,
        previous_state=DeviceUpgradeState.UPGRADING,
        state=DeviceUpgradeState.SUCCEEDED,
        stage=ReleaseStage.CANARY,
        attempt=1,
    )
    halted = ReleaseHalted(
        release_id="r1", tuya_region="us", stage=ReleaseStage.CANARY, automatic=True, reason="failures"
    )
    await publisher.publish(
        [entry(build(DeviceUpgradeStateChangedEvent, changed)), entry(build(ReleaseHaltedEvent, halted))]
    )
    assert sample(registry, "fleet_ota_device_upgrades_total", region="eu", state="succeeded") == 1
    assert sample(registry, "fleet_ota_release_events_total", region="us", event="halted") == 1


def test_each_service_registers_its_counters_once_per_registry() -> None:
    registry = CollectorRegistry()
    for metrics in (pairing_metrics, unbinding_metrics, ota_metrics):
        first: list[EventMetric] = metrics(registry)
        again = metrics(registry)  # a second bootstrap in the same process
        assert [m.counter for m in first] == [m.counter for m in again]
