"""Helpers of the offline deployment checks: paths, the tools, `helm template` renderings."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "infra" / "helm" / "tuya-fleet"
PRODUCTION_EXAMPLE = CHART / "values-production.example.yaml"
RULES = ROOT / "infra" / "observability" / "prometheus" / "rules.yaml"
RULE_TESTS = ROOT / "infra" / "observability" / "prometheus" / "rules.test.yaml"
DASHBOARDS = ROOT / "infra" / "observability" / "grafana"
# Pulsar with token authentication and TLS, and a private CA for every client (the "secured" rendering)
SECURED = (
    "--set=pulsar.url=pulsar+ssl://pulsar-proxy.pulsar.svc.cluster.local:6651",
    "--set=pulsar.adminUrl=https://pulsar-proxy.pulsar.svc.cluster.local:443",
    "--set=pulsar.auth.existingSecret=pulsar-client-token",
    "--set=tls.caBundle.configMap=fleet-private-ca",
    "--set=tls.caBundle.key=ca.pem",
)


@dataclass(frozen=True)
class Tools:
    helm: Path
    kube_score: Path
    promtool: Path


def install(*tools: str) -> list[Path]:
    """Run infra/tools/install; its stdout is one installed path per tool."""
    result = subprocess.run(
        [str(ROOT / "infra" / "tools" / "install"), *tools],
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    if result.returncode != 0:
        pytest.fail(f"infra/tools/install {' '.join(tools)} failed:\n{result.stderr}", pytrace=False)
    return [Path(line) for line in result.stdout.split()]


def run(*command: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in command], capture_output=True, text=True, check=False, cwd=cwd, timeout=300
    )


@dataclass(frozen=True)
class Rendering:
    """One `helm template` output: the text and its objects."""

    name: str
    path: Path
    objects: list[dict[str, Any]]

    def of_kind(self, kind: str) -> dict[str, dict[str, Any]]:
        return {o["metadata"]["name"]: o for o in self.objects if o["kind"] == kind}

    def component(self, kind: str, component: str) -> dict[str, Any] | None:
        for o in self.objects:
            if o["kind"] == kind and o["metadata"]["labels"].get("app.kubernetes.io/component") == component:
                return o
        return None


def render(tools: Tools, out: Path, *args: str) -> Rendering:
    result = run(tools.helm, "template", "fleet", CHART, "--namespace", "fleet", *args)
    assert result.returncode == 0, result.stderr
    out.write_text(result.stdout)
    objects = [o for o in yaml.safe_load_all(result.stdout) if o]
    return Rendering(out.stem, out, objects)
