"""Alert rules and dashboards: promtool checks and unit-tests the rules, the dashboards are what their
generator writes and parse as PromQL, and every metric a rule or a panel reads is one that exists: defined in
the code (prometheus_client metrics under shared/ and services/), served by prometheus_client's default
collectors, or exported by the pinned Apache Pulsar broker."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import zipfile
from functools import cache
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from tests.unit.ops.queries import (
    PULSAR_BROKER_METRICS,
    SCRAPE_METRICS,
    SUFFIXES,
    dashboard_expressions,
    exported_names,
    metric_names,
    rule_expressions,
)
from tests.unit.ops.support import DASHBOARDS, ROOT, RULE_TESTS, RULES, Tools, run

pytestmark = pytest.mark.unit

SOURCES = [ROOT / "shared" / "src", *sorted((ROOT / "services").glob("*/src"))]
DEFINITION = re.compile(r"\b(Counter|Gauge|Histogram|Summary|Info|Enum)\(\s*\"([a-zA-Z_:][a-zA-Z0-9_:]*)\"")
# the domain counters fed by published events (fleet_shared.pulsar.outbox.event_counter)
EVENT_COUNTER = re.compile(r"\bevent_counter\(\s*\w+,\s*\"([a-zA-Z_:][a-zA-Z0-9_:]*)\"")
# prometheus_client's class names -> the kinds of the exposition format
KINDS = {"Counter": "counter", "Gauge": "gauge", "Histogram": "histogram", "Summary": "summary",
         "Info": "info", "Enum": "stateset"}  # fmt: skip


def code_metrics() -> dict[str, Path]:
    """Every sample name the code's prometheus_client metrics expose, with the file defining it."""
    names: dict[str, Path] = {}
    for source in SOURCES:
        for module in source.rglob("*.py"):
            text = module.read_text()
            found = [*DEFINITION.findall(text), *(("Counter", n) for n in EVENT_COUNTER.findall(text))]
            for kind, name in found:
                base = name.removesuffix("_total") if kind == "Counter" else name
                for suffix in SUFFIXES[KINDS[kind]]:
                    names[base + suffix] = module
    return names


def default_collector_metrics() -> set[str]:
    """What prometheus_client's default registry adds in every service (process_*, python_*)."""
    registry = CollectorRegistry()
    for collector in (ProcessCollector, PlatformCollector, GCCollector):
        collector(registry=registry)
    return {sample.name for family in registry.collect() for sample in family.samples}


@cache
def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fleet_dashboards", DASHBOARDS / "generate.py")
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


def as_plain_promql(expr: str) -> str:
    """A dashboard query with Grafana's variables replaced, so promtool can parse it."""
    return expr.replace("$__rate_interval", "5m").replace("$namespace", "fleet")


def test_promtool_checks_the_rules(tools: Tools) -> None:
    result = run(tools.promtool, "check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 16 rules found" in result.stdout


def test_promtool_unit_tests_of_the_rules_pass(tools: Tools) -> None:
    result = run(tools.promtool, "test", "rules", RULE_TESTS, cwd=RULE_TESTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test() -> None:
    tested = {
        check["alertname"]
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for check in test["alert_rule_test"]
        if check["exp_alerts"]
    }
    assert {name.removeprefix("alert ") for name, _ in rule_expressions()} == tested


def test_dashboards_are_what_the_generator_writes() -> None:
    rendered: dict[str, str] = generator().rendered()
    assert rendered
    for name, text in rendered.items():
        assert (DASHBOARDS / name).read_text() == text, (
            f"regenerate: uv run python {DASHBOARDS / 'generate.py'}"
        )
    assert {p.name for p in DASHBOARDS.glob("*.json")} == set(rendered)


def test_dashboards_have_unique_panel_ids_and_queries_everywhere() -> None:
    for path in DASHBOARDS.glob("*.json"):
        board = json.loads(path.read_text())
        ids = [panel["id"] for panel in board["panels"]]
        assert len(ids) == len(set(ids)), path.name
        for panel in board["panels"]:
            assert panel["type"] == "row" or panel["targets"], panel["title"]


def test_dashboard_queries_parse_as_promql(tools: Tools, tmp_path: Path) -> None:
    rules = [
        {"record": f"dashboard:query:{i}", "expr": as_plain_promql(expr)}
        for i, (_, expr) in enumerate(dashboard_expressions())
    ]
    assert len(rules) > 20
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = run(tools.promtool, "check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_metric_read_by_a_rule_or_a_dashboard_exists() -> None:
    known = set(code_metrics()) | default_collector_metrics() | PULSAR_BROKER_METRICS | SCRAPE_METRICS
    used: dict[str, set[str]] = {}
    for where, expr in [*rule_expressions(), *dashboard_expressions()]:
        names = metric_names(expr)
        assert names, f"{where}: no metric found in {expr!r}"
        for name in names:
            used.setdefault(name, set()).add(where)
    unknown = {name: sorted(places) for name, places in used.items() if name not in known}
    assert not unknown, f"metrics nobody exports: {unknown}"
    # the lists above are not padding: each entry is read somewhere
    assert set(used) >= PULSAR_BROKER_METRICS | SCRAPE_METRICS


def test_the_metric_name_reader_sees_names_and_only_names() -> None:
    expr = (
        'sum by (namespace, le) (rate(fleet_http_request_seconds_bucket{route!~"/a|b(c)"}[5m])) '
        "/ on (pod) group_left status_messages_total > bool 0 and up"
    )
    assert metric_names(expr) == {"fleet_http_request_seconds_bucket", "status_messages_total", "up"}


def test_code_metrics_include_the_services_definitions() -> None:
    names = code_metrics()
    assert names["fleet_ingest_messages_rejected_total"].name == "metrics.py"
    assert names["status_flush_seconds_count"].name == "writer.py"
    assert "fleet_http_requests_total" in names
    # pairing, unbinding and ota: event-fed counters and unbinding's quota gauges
    for name, service in [
        ("fleet_pairing_device_outcomes_total", "fleet_pairing"),
        ("fleet_unbinding_quota_used", "fleet_unbinding"),
        ("fleet_ota_device_upgrades_total", "fleet_ota"),
    ]:
        assert names[name].parts[-3:] == (service, "adapters", "metrics.py"), name
    assert "fleet_http_requests" not in names  # a counter's samples end in _total


def pulsar_broker_jar() -> Path:
    """The broker jar of the Pulsar version infra/pulsar/pom.xml pins, from the local Maven repository."""
    pinned = re.search(
        r"<pulsar.version>([^<]+)</pulsar.version>", (ROOT / "infra/pulsar/pom.xml").read_text()
    )
    assert pinned, "infra/pulsar/pom.xml names no pulsar.version"
    version = pinned.group(1)
    return (
        Path.home() / f".m2/repository/org/apache/pulsar/pulsar-broker/{version}/pulsar-broker-{version}.jar"
    )


def test_pulsar_metric_names_are_the_pinned_brokers() -> None:
    jar = pulsar_broker_jar()
    if not jar.exists():
        pytest.skip(f"{jar} not downloaded yet (the local stack's first start fetches it)")
    found: set[str] = set()
    with zipfile.ZipFile(jar) as archive:
        for entry in archive.namelist():
            if entry.endswith(".class"):
                found.update(m.decode() for m in re.findall(rb"pulsar_[a-z_]+", archive.read(entry)))
    assert found >= PULSAR_BROKER_METRICS, sorted(PULSAR_BROKER_METRICS - found)


def test_exported_names_reads_declared_metrics_and_samples() -> None:
    page = """# HELP fleet_http_requests_total HTTP requests answered
# TYPE fleet_http_requests_total counter
fleet_http_requests_total{service="status",route="/readyz"} 3.0
# HELP fleet_pairing_device_outcomes_total Devices' pairing outcomes
# TYPE fleet_pairing_device_outcomes_total counter
# HELP status_flush_seconds Time to flush one batch
# TYPE status_flush_seconds histogram
status_flush_seconds_bucket{le="0.1"} 1.0
pulsar_subscription_back_log{namespace="fleet/status"} 0
"""
    names = exported_names(page)
    assert {"fleet_http_requests_total", "fleet_pairing_device_outcomes_total"} <= names
    assert {
        "status_flush_seconds_bucket",
        "status_flush_seconds_count",
        "pulsar_subscription_back_log",
    } <= names
    assert "fleet_http_requests" not in names
