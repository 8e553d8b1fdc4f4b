"""Writes the Grafana dashboards of tuya-fleet as JSON (import them, or provision them from this folder).

    uv run python infra/observability/grafana/generate.py    # rewrites tuya-fleet-overview.json

The JSON is committed; tests/unit/ops checks it is what this file generates and that every metric it
queries is one the code defines. Panels select tuya-fleet's targets by job="tuya-fleet" and tell services
apart by `service` (the chart's ServiceMonitor sets both); Pulsar panels read the broker's own metrics.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
FLEET = 'job="tuya-fleet", namespace="$namespace"'
API = f'{FLEET}, route!~"/healthz|/readyz|/metrics"'
PULSAR = 'namespace=~"fleet/.+"'
RATE = "[$__rate_interval]"


@dataclass
class Panel:
    title: str
    targets: list[tuple[str, str]]  # (PromQL, legend)
    unit: str = "short"
    description: str = ""
    width: int = 8


@dataclass
class Row:
    title: str
    panels: list[Panel] = field(default_factory=list)


def per_subscription(metric: str) -> tuple[str, str]:
    """A Pulsar subscription gauge summed over the topic's partitions, one line per subscription."""
    return f"sum by (namespace, subscription) ({metric}{{{PULSAR}}})", "{{subscription}} on {{namespace}}"


def quantile(q: float, bucket: str, selector: str, by: str = "") -> str:
    group = f"{by}, le" if by else "le"
    return f"histogram_quantile({q}, sum by ({group}) (rate({bucket}{{{selector}}}{RATE})))"


OVERVIEW = [
    Row(
        "Services",
        [
            Panel("Replicas up", [(f"sum by (service) (up{{{FLEET}}})", "{{service}}")]),
            Panel(
                "Readiness failing (share of /readyz answered 503)",
                [
                    (
                        f'sum by (service) (rate(fleet_http_requests_total{{{FLEET}, route="/readyz", '
                        f'status="503"}}{RATE})) / sum by (service) (rate(fleet_http_requests_total'
                        f'{{{FLEET}, route="/readyz"}}{RATE}))',
                        "{{service}}",
                    )
                ],
                unit="percentunit",
            ),
            Panel(
                "Resident memory per pod",
                [(f"max by (service, pod) (process_resident_memory_bytes{{{FLEET}}})", "{{pod}}")],
                unit="bytes",
                description="Compare with the chart's memory limits (status ~350 MiB peak at 5k msg/s).",
            ),
            Panel(
                "CPU per pod",
                [(f"sum by (service, pod) (rate(process_cpu_seconds_total{{{FLEET}}}{RATE}))", "{{pod}}")],
                unit="percentunit",
            ),
        ],
    ),
    Row(
        "HTTP API (rate, errors, duration)",
        [
            Panel(
                "Requests per second",
                [(f"sum by (service) (rate(fleet_http_requests_total{{{API}}}{RATE}))", "{{service}}")],
                unit="reqps",
            ),
            Panel(
                "5xx share",
                [
                    (
                        f'sum by (service) (rate(fleet_http_requests_total{{{API}, status=~"5.."}}{RATE})) '
                        f"/ sum by (service) (rate(fleet_http_requests_total{{{API}}}{RATE}))",
                        "{{service}}",
                    )
                ],
                unit="percentunit",
            ),
            Panel(
                "Duration p95",
                [(quantile(0.95, "fleet_http_request_seconds_bucket", API, "service"), "{{service}}")],
                unit="s",
            ),
            Panel(
                "Requests by route and status",
                [
                    (
                        f"sum by (service, route, status) (rate(fleet_http_requests_total{{{API}}}{RATE}))",
                        "{{service}} {{route}} {{status}}",
                    )
                ],
                unit="reqps",
                width=24,
            ),
        ],
    ),
    Row(
        "Subscriptions (rate, errors, duration from the consumers; backlog, redeliveries from Pulsar)",
        [
            Panel(
                "Messages processed per second",
                [
                    (
                        f"sum by (service, subscription) (rate(fleet_bus_messages_processed_total{{{FLEET}}}"
                        f"{RATE}))",
                        "{{service}} {{subscription}}",
                    )
                ],
                unit="ops",
                description="Deliveries a handler was called for (redeliveries too), all replicas summed.",
            ),
            Panel(
                "Error ratio",
                [
                    (
                        "sum by (service, subscription) "
                        f"(rate(fleet_bus_messages_failed_total{{{FLEET}}}{RATE})) "
                        "/ sum by (service, subscription) "
                        f"(rate(fleet_bus_messages_processed_total{{{FLEET}}}{RATE}))",
                        "{{service}} {{subscription}}",
                    )
                ],
                unit="percentunit",
                description="Failed deliveries (nacked, dead-lettered, rejected, acked after a failure) "
                "against every delivery. Alert: FleetSubscriptionErrors.",
            ),
            Panel(
                "Handler duration p99",
                [
                    (
                        quantile(0.99, "fleet_bus_handler_seconds_bucket", FLEET, "service, subscription"),
                        "{{service}} {{subscription}}",
                    )
                ],
                unit="s",
                description="The handler and its ack (status acks later, once written: its handler alone).",
            ),
            Panel(
                "Failures by outcome",
                [
                    (
                        "sum by (service, subscription, outcome) "
                        f"(rate(fleet_bus_messages_failed_total{{{FLEET}}}{RATE}))",
                        "{{service}} {{subscription}} {{outcome}}",
                    )
                ],
                unit="ops",
                description="nack: redelivered later; dead_letter: redeliveries used up; reject: malformed; "
                "ack: the handler failed and the ack policy dropped it.",
            ),
            Panel(
                "Backlog",
                [per_subscription("pulsar_subscription_back_log")],
            ),
            Panel(
                "Redeliveries per second",
                [per_subscription("pulsar_subscription_msg_rate_redeliver")],
                unit="ops",
            ),
        ],
    ),
    Row(
        "Subscriptions (Pulsar's view)",
        [
            Panel(
                "Delivered per second",
                [per_subscription("pulsar_subscription_msg_rate_out")],
                unit="ops",
            ),
            Panel(
                "Unacknowledged",
                [per_subscription("pulsar_subscription_unacked_messages")],
            ),
            Panel(
                "Dead letters per second",
                [
                    (
                        f'sum by (topic) (rate(pulsar_in_messages_total{{{PULSAR}, topic=~".*dead-letter.*"}}'
                        f"{RATE}))",
                        "{{topic}}",
                    )
                ],
                unit="ops",
            ),
            Panel(
                "Consumers per subscription",
                [per_subscription("pulsar_subscription_consumers_count")],
            ),
        ],
    ),
    Row(
        "Sends per topic (every service's producers)",
        [
            Panel(
                "Messages sent per second",
                [
                    (
                        f"sum by (service, topic) (rate(fleet_bus_messages_sent_total{{{FLEET}}}{RATE}))",
                        "{{service}} {{topic}}",
                    )
                ],
                unit="ops",
            ),
            Panel(
                "Send failures per second",
                [
                    (
                        f"sum by (service, topic) (rate(fleet_bus_send_failures_total{{{FLEET}}}{RATE}))",
                        "{{service}} {{topic}}",
                    )
                ],
                unit="ops",
            ),
            Panel(
                "Send duration p99 (until persisted)",
                [
                    (
                        quantile(0.99, "fleet_bus_send_seconds_bucket", FLEET, "service, topic"),
                        "{{service}} {{topic}}",
                    )
                ],
                unit="s",
            ),
        ],
    ),
    Row(
        "Ingest pipeline (Tuya push stream to device events)",
        [
            Panel(
                "Tuya messages per second",
                [
                    (f"sum (rate(fleet_ingest_messages_received_total{{{FLEET}}}{RATE}))", "received"),
                    (
                        f"sum by (kind) (rate(fleet_ingest_messages_decoded_total{{{FLEET}}}{RATE}))",
                        "decoded {{kind}}",
                    ),
                    (
                        f"sum by (reason) (rate(fleet_ingest_messages_rejected_total{{{FLEET}}}{RATE}))",
                        "dead-lettered {{reason}}",
                    ),
                    (
                        f"sum by (source) (rate(fleet_ingest_duplicates_dropped_total{{{FLEET}}}{RATE}))",
                        "duplicate ({{source}})",
                    ),
                ],
                unit="ops",
            ),
            Panel(
                "Device events published per second",
                [
                    (
                        f"sum by (type) (rate(fleet_ingest_events_published_total{{{FLEET}}}{RATE}))",
                        "{{type}}",
                    )
                ],
                unit="ops",
            ),
            Panel(
                "Publish confirmation latency",
                [
                    (quantile(0.5, "fleet_ingest_publish_latency_seconds_bucket", FLEET), "p50"),
                    (quantile(0.99, "fleet_ingest_publish_latency_seconds_bucket", FLEET), "p99"),
                ],
                unit="s",
            ),
            Panel(
                "Lag behind Tuya's stream",
                [
                    (f"max by (pod) (fleet_ingest_consumer_lag_last_seconds{{{FLEET}}})", "last {{pod}}"),
                    (quantile(0.95, "fleet_ingest_consumer_lag_seconds_bucket", FLEET), "p95"),
                ],
                unit="s",
                description="Tuya deletes messages left unconsumed for 2 hours.",
            ),
            Panel(
                "In flight (received, not yet acked)",
                [(f"sum by (pod) (fleet_ingest_in_flight_messages{{{FLEET}}})", "{{pod}}")],
            ),
            Panel(
                "Recoveries and dedup store errors",
                [
                    (
                        f"sum by (cause) (increase(fleet_ingest_recoveries_total{{{FLEET}}}{RATE}))",
                        "resubscribed after {{cause}}",
                    ),
                    (
                        f"sum (increase(fleet_ingest_dedup_store_errors_total{{{FLEET}}}{RATE}))",
                        "dedup store errors",
                    ),
                ],
            ),
        ],
    ),
    Row(
        "Status shadow writer",
        [
            Panel(
                "Events merged and shadows written per second",
                [
                    (f"sum (rate(status_messages_total{{{FLEET}}}{RATE}))", "events merged"),
                    (f"sum (rate(status_shadow_writes_total{{{FLEET}}}{RATE}))", "shadows written"),
                    (f"sum (rate(status_flush_seconds_count{{{FLEET}}}{RATE}))", "flushes"),
                ],
                unit="ops",
            ),
            Panel(
                "Flush duration",
                [
                    (quantile(0.5, "status_flush_seconds_bucket", FLEET), "p50"),
                    (quantile(0.95, "status_flush_seconds_bucket", FLEET), "p95"),
                ],
                unit="s",
            ),
            Panel(
                "Conflicts, refused DP values, failed flushes",
                [
                    (f"sum (rate(status_write_conflicts_total{{{FLEET}}}{RATE}))", "write conflicts"),
                    (f"sum (rate(status_dp_values_refused_total{{{FLEET}}}{RATE}))", "DP values refused"),
                    (
                        f"sum by (pod) (rate(status_flush_failures_total{{{FLEET}}}{RATE}))",
                        "failed flushes {{pod}}",
                    ),
                ],
                unit="ops",
            ),
        ],
    ),
]


OVERVIEW += [
    Row(
        "Pairing (device outcomes, sessions)",
        [
            Panel(
                "Device outcomes per second",
                [
                    (
                        f"sum by (outcome) (rate(fleet_pairing_device_outcomes_total{{{FLEET}}}{RATE}))",
                        "{{outcome}}",
                    )
                ],
                unit="ops",
                description="Counted when the outcome's event is published (durable).",
            ),
            Panel(
                "Pairing failures by cause (last hour)",
                [
                    (
                        "sum by (cause) (increase(fleet_pairing_device_outcomes_total"
                        f'{{{FLEET}, outcome="failed"}}[1h]))',
                        "{{cause}}",
                    )
                ],
                description="Tuya's error codes as typed causes (wrong_wifi_password, timeout, ...).",
            ),
            Panel(
                "Sessions ended by state (last hour)",
                [
                    (
                        f"sum by (state) (increase(fleet_pairing_sessions_ended_total{{{FLEET}}}[1h]))",
                        "{{state}}",
                    )
                ],
            ),
        ],
    ),
    Row(
        "Unbinding (device results, today's quotas)",
        [
            Panel(
                "Quota used (share of today's limit)",
                [
                    (
                        f"max by (scope, subject) (fleet_unbinding_quota_used{{{FLEET}}}) "
                        f"/ max by (scope, subject) (fleet_unbinding_quota_limit{{{FLEET}}} > 0)",
                        "{{scope}} {{subject}}",
                    )
                ],
                unit="percentunit",
                description="Per account and per product; over it, devices are refused (quota_exceeded).",
            ),
            Panel(
                "Quota units used today",
                [
                    (
                        f"max by (scope, subject) (fleet_unbinding_quota_used{{{FLEET}}})",
                        "{{scope}} {{subject}}",
                    )
                ],
            ),
            Panel(
                "Device results per second",
                [
                    (
                        "sum by (result, cause) "
                        f"(rate(fleet_unbinding_device_results_total{{{FLEET}}}{RATE}))",
                        "{{result}} {{cause}}",
                    )
                ],
                unit="ops",
            ),
        ],
    ),
    Row(
        "OTA (upgrade progress by region and state)",
        [
            Panel(
                "Upgrades entering each state per second",
                [
                    (
                        f"sum by (region, state) (rate(fleet_ota_device_upgrades_total{{{FLEET}}}{RATE}))",
                        "{{region}} {{state}}",
                    )
                ],
                unit="ops",
            ),
            Panel(
                "Upgrades ended in the last hour",
                [
                    (
                        f"sum by (region, state) (increase(fleet_ota_device_upgrades_total{{{FLEET}, "
                        'state=~"succeeded|failed|timed_out|cancelled"}[1h]))',
                        "{{region}} {{state}}",
                    )
                ],
            ),
            Panel(
                "Release events (last hour)",
                [
                    (
                        f"sum by (region, event) (increase(fleet_ota_release_events_total{{{FLEET}}}[1h]))",
                        "{{region}} {{event}}",
                    )
                ],
            ),
        ],
    ),
]


def dashboard(title: str, uid: str, rows: list[Row]) -> dict[str, Any]:
    datasource = {"type": "prometheus", "uid": "${datasource}"}
    panels: list[dict[str, Any]] = []
    y = 0
    next_id = 1
    for row in rows:
        panels.append(
            {"id": next_id, "type": "row", "title": row.title, "collapsed": False, "panels": [],
             "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}}
        )  # fmt: skip
        next_id += 1
        y += 1
        x = 0
        for panel in row.panels:
            if x + panel.width > 24:
                x, y = 0, y + 8
            panels.append(
                {
                    "id": next_id,
                    "type": "timeseries",
                    "title": panel.title,
                    "description": panel.description,
                    "datasource": datasource,
                    "gridPos": {"h": 8, "w": panel.width, "x": x, "y": y},
                    "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
                    "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}},
                    "targets": [
                        {
                            "refId": chr(ord("A") + i),
                            "datasource": datasource,
                            "expr": expr,
                            "legendFormat": legend,
                        }
                        for i, (expr, legend) in enumerate(panel.targets)
                    ],
                }
            )
            next_id += 1
            x += panel.width
        y += 8
    return {
        "title": title,
        "uid": uid,
        "tags": ["tuya-fleet"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-3h", "to": "now"},
        "templating": {
            "list": [
                {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus"},
                {
                    "name": "namespace",
                    "label": "Namespace",
                    "type": "query",
                    "datasource": datasource,
                    "query": {"query": 'label_values(up{job="tuya-fleet"}, namespace)', "refId": "namespace"},
                    "definition": 'label_values(up{job="tuya-fleet"}, namespace)',
                    "refresh": 2,
                },
            ]
        },
        "annotations": {"list": []},
        "panels": panels,
    }


DASHBOARDS = {"tuya-fleet-overview.json": dashboard("tuya-fleet overview", "tuya-fleet-overview", OVERVIEW)}


def rendered() -> dict[str, str]:
    return {name: json.dumps(board, indent=2) + "\n" for name, board in DASHBOARDS.items()}


def main() -> None:
    for name, text in rendered().items():
        (HERE / name).write_text(text)
        print(f"wrote {HERE / name}")


if __name__ == "__main__":
    main()
