"""What the alert rules and the dashboards read, and what a /metrics page serves: the metric names on both
sides (used by tests/unit/ops against the code, and by the trace e2e against the running services)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import yaml

from tests.unit.ops.support import DASHBOARDS, RULES

# Apache Pulsar's broker exports these (topic-level metrics)
PULSAR_BROKER_METRICS = {
    "pulsar_subscription_back_log",
    "pulsar_subscription_msg_rate_out",
    "pulsar_subscription_msg_rate_redeliver",
    "pulsar_subscription_unacked_messages",
    "pulsar_subscription_consumers_count",
    "pulsar_in_messages_total",
}
# Prometheus itself: one sample per scrape target
SCRAPE_METRICS = {"up"}
# the sample names of each kind of metric, after its base name (a counter's base drops `_total`)
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "untyped": ("",),
}
PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "group_left", "group_right"}
_TYPE_LINE = re.compile(r"^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (\w+)$")
_SAMPLE_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (not its functions, keywords or label names)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        word = match.group()
        if re.match(r"\s*\(", text[match.end() :]) or word.lower() in PROMQL_WORDS:
            continue
        names.add(word)
    return names


def rule_expressions() -> Iterator[tuple[str, str]]:
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            yield f"alert {rule['alert']}", rule["expr"]


def dashboard_expressions() -> Iterator[tuple[str, str]]:
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                yield f"{path.name}: {panel['title']}", target["expr"]


def exported_names(page: str) -> set[str]:
    """The sample names a /metrics page (Prometheus text format) serves: every sample line's, and for each
    declared metric all its kind's sample names (a labelled metric nothing has touched yet has none)."""
    names: set[str] = set()
    for line in page.splitlines():
        declared = _TYPE_LINE.match(line)
        if declared:
            name, kind = declared.groups()
            base = name.removesuffix("_total") if kind == "counter" else name
            names.update(base + suffix for suffix in SUFFIXES.get(kind, ("",)))
        elif not line.startswith("#"):
            sample = _SAMPLE_LINE.match(line)
            if sample:
                names.add(sample.group(1))
    return names
