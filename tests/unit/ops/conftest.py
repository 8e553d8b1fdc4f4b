"""The offline deployment checks' tools and the chart's renderings, made once per test session.

The tools are installed by the project's own script (infra/tools/install) when missing, so CI runs these
checks on a fresh machine; an install that fails fails the tests with the script's reason.
"""

from __future__ import annotations

import pytest

from tests.unit.ops.support import PRODUCTION_EXAMPLE, SECURED, Rendering, Tools, install, render


@pytest.fixture(scope="session")
def tools() -> Tools:
    helm, kube_score, promtool = install("helm", "kube-score", "promtool")
    return Tools(helm=helm, kube_score=kube_score, promtool=promtool)


@pytest.fixture(scope="session")
def renderings(tools: Tools, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Rendering]:
    """The chart with its defaults, with the production example, with that and every service enabled, and
    with all that behind Pulsar token authentication and TLS signed by a private CA."""
    folder = tmp_path_factory.mktemp("helm")
    everything = [f"--set=services.{name}.enabled=true" for name in ("pairing", "unbinding", "ota")]
    return {
        "defaults": render(tools, folder / "defaults.yaml"),
        "production": render(tools, folder / "production.yaml", "-f", str(PRODUCTION_EXAMPLE)),
        "all-services": render(tools, folder / "all.yaml", "-f", str(PRODUCTION_EXAMPLE), *everything),
        "secured": render(
            tools, folder / "secured.yaml", "-f", str(PRODUCTION_EXAMPLE), *everything, *SECURED
        ),
    }
