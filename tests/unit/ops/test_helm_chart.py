"""The Helm chart, checked offline: helm lint, helm template (defaults and the production example), every
rendered object against the Kubernetes schemas (kubernetes-validate --strict), kube-score, and what the
chart promises: one Deployment per service from the registry, hardened pods, secrets only by reference,
settings the services read, a grace period longer than their drain."""

from __future__ import annotations

import os
import re
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from fleet_ingest.settings import IngestSettings
from fleet_ota.settings import OtaSettings
from fleet_pairing.settings import PairingSettings
from fleet_shared.security.settings import SecuritySettings
from fleet_shared.service.registry import SERVICES
from fleet_shared.service.settings import ServiceSettings
from fleet_shared.service.telemetry import TracingSettings, sampler_of
from fleet_status.settings import StatusSettings
from fleet_tuya_sim.settings import SimSettings
from fleet_unbinding.settings import UnbindingSettings
from tests.unit.ops.support import CHART, PRODUCTION_EXAMPLE, ROOT, RULES, Rendering, Tools, render, run

pytestmark = pytest.mark.unit

# the chart's oldest supported Kubernetes (Chart.yaml kubeVersion) and the newest kubernetes-validate knows
KUBERNETES_VERSIONS = ("1.29.0", "1.37.0")
# prometheus-operator's kinds: no schema in kubernetes-validate (the PrometheusRule is checked by promtool)
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule"}
SETTINGS: dict[str, type[BaseSettings]] = {
    "ingest": IngestSettings,
    "status": StatusSettings,
    "tuya-sim": SimSettings,
    "pairing": PairingSettings,
    "unbinding": UnbindingSettings,
    "ota": OtaSettings,
}
# read outside a settings class: the simulator's CLI takes its log level from the environment (__main__)
READ_BY_CLI = {"tuya-sim": {"FLEET_SIM_LOG_LEVEL"}}
# read by the libraries themselves: Python's default TLS trust (httpx, MongoDB's driver, urllib)
READ_BY_LIBRARIES = {"SSL_CERT_FILE"}
CA_FILE = "/etc/tuya-fleet/ca/ca.crt"
WORKLOADS = ("Deployment", "Job")
RENDERINGS = ("defaults", "production", "all-services", "secured")
POD_ADDRESS = ("0.0.0.0", 8000)  # noqa: S104 - a pod listens on its own address


def values() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return loaded


def pod_specs(rendering: Rendering) -> dict[str, dict[str, Any]]:
    return {
        f"{o['kind']}/{o['metadata']['name']}": o["spec"]["template"]["spec"]
        for o in rendering.objects
        if o["kind"] in WORKLOADS
    }


@pytest.mark.parametrize("example", [None, PRODUCTION_EXAMPLE], ids=["defaults", "production"])
def test_helm_lint_passes(tools: Tools, example: Path | None) -> None:
    extra = ["-f", str(example)] if example else []
    result = run(tools.helm, "lint", "--strict", CHART, *extra)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", RENDERINGS)
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_rendered_object_matches_the_kubernetes_schema(
    renderings: dict[str, Rendering], name: str, version: str
) -> None:
    rendering = renderings[name]
    validate = Path(sys.executable).with_name("kubernetes-validate")
    result = run(validate, "--strict", "--kubernetes-version", version, rendering.path)
    assert result.returncode == 0, result.stdout + result.stderr
    checked = re.findall(r"passed for resource (\S+)/", result.stdout)
    unchecked = set(re.findall(r"Couldn't find schema for kind (\S+)", result.stdout + result.stderr))
    assert unchecked <= CUSTOM_KINDS
    assert len(checked) == sum(o["kind"] not in CUSTOM_KINDS for o in rendering.objects)


@pytest.mark.parametrize("name", RENDERINGS)
def test_kube_score_finds_nothing(tools: Tools, renderings: dict[str, Rendering], name: str) -> None:
    result = run(
        tools.kube_score, "score", "--output-format", "ci", "--exit-one-on-warning", renderings[name].path
    )
    problems = [line for line in result.stdout.splitlines() if line.startswith(("[CRITICAL]", "[WARNING]"))]
    assert not problems, "\n".join(problems)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_registered_service_is_one_values_entry_with_its_console_script() -> None:
    entries = values()["services"]
    for entry in SERVICES:
        assert list(entries[entry.name]["command"]) == list(entry.command), entry.name
    for folder in (ROOT / "services").glob("*/pyproject.toml"):
        scripts = tomllib.loads(folder.read_text())["project"]["scripts"]
        assert entries[folder.parent.name]["command"][0] in scripts
    assert set(entries) == {entry.name for entry in SERVICES}


def test_defaults_run_the_simulator_and_production_does_not(renderings: dict[str, Rendering]) -> None:
    defaults, production = renderings["defaults"], renderings["production"]
    deployed = {"tuya-sim", "ingest", "status", "pairing", "unbinding", "ota"}
    assert {o["metadata"]["labels"]["app.kubernetes.io/component"] for o in defaults.objects
            if o["kind"] == "Deployment"} == deployed  # fmt: skip
    assert {o["metadata"]["labels"]["app.kubernetes.io/component"] for o in production.objects
            if o["kind"] == "Deployment"} == deployed - {"tuya-sim"}  # fmt: skip
    # with the simulator, services call its OpenAPI and provisioning lays out its Tuya topic
    config = defaults.component("ConfigMap", "status")
    assert config
    assert config["data"]["FLEET_TUYA_OPENAPI_URL"] == "http://fleet-tuya-fleet-tuya-sim:8000"
    job = defaults.component("Job", "provisioning")
    assert job
    assert "--tuya-access-id" in job["spec"]["template"]["spec"]["containers"][0]["command"]
    job = production.component("Job", "provisioning")
    assert job
    assert "--tuya-access-id" not in job["spec"]["template"]["spec"]["containers"][0]["command"]


@pytest.mark.parametrize("name", RENDERINGS)
def test_each_service_has_its_objects_and_consumers_scale(
    renderings: dict[str, Rendering], name: str
) -> None:
    rendering = renderings[name]
    for deployment in rendering.of_kind("Deployment").values():
        component = deployment["metadata"]["labels"]["app.kubernetes.io/component"]
        for kind in ("Service", "ConfigMap", "NetworkPolicy"):
            assert rendering.component(kind, component), (kind, component)
        consumer = component != "tuya-sim"
        assert bool(rendering.component("HorizontalPodAutoscaler", component)) == consumer
        assert bool(rendering.component("PodDisruptionBudget", component)) == consumer
        # an HPA owns the replica count
        assert ("replicas" in deployment["spec"]) != consumer
    hpa = rendering.component("HorizontalPodAutoscaler", "ingest")
    assert hpa
    assert hpa["spec"]["maxReplicas"] <= 11  # Failover per partition: 11 partitions at Tuya


@pytest.mark.parametrize("name", RENDERINGS)
def test_pods_are_hardened(renderings: dict[str, Rendering], name: str) -> None:
    for where, spec in pod_specs(renderings[name]).items():
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert spec["automountServiceAccountToken"] is False, where
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["capabilities"]["drop"] == ["ALL"], where
            assert {"cpu", "memory"} <= set(container["resources"]["limits"]), where
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            volumes = {v["name"]: v for v in spec["volumes"]}
            assert "emptyDir" in volumes[mounts["/tmp"]], where


@pytest.mark.parametrize("name", RENDERINGS)
def test_probes_and_grace_period_cover_the_drain(renderings: dict[str, Rendering], name: str) -> None:
    # each drain step is bounded by its own timeout: HTTP requests, in-flight messages, status's last flush
    drain = (
        ServiceSettings.model_fields["shutdown_timeout_s"].default * 2
        + StatusSettings.model_fields["status_shutdown_timeout_s"].default
    )
    for deployment in renderings[name].of_kind("Deployment").values():
        spec = deployment["spec"]["template"]["spec"]
        container = spec["containers"][0]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        pause = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
        assert spec["terminationGracePeriodSeconds"] > drain + pause


def test_no_secret_value_is_rendered(renderings: dict[str, Rendering]) -> None:
    for rendering in renderings.values():
        assert not rendering.of_kind("Secret")
        for config in rendering.of_kind("ConfigMap").values():
            for key in config["data"]:
                assert not re.search(r"SECRET|API_KEYS|TOKEN|PASSWORD", key), key
    # production: the access secret, the MongoDB URI (credentials) and API keys come from Secrets
    status = renderings["production"].component("Deployment", "status")
    assert status
    env = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in status["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["FLEET_TUYA_ACCESS_SECRET"] == {"name": "tuya-project", "key": "access-secret"}
    assert env["FLEET_MONGODB_URI"]["name"] == "fleet-mongodb-admin-tuya-fleet"
    assert env["FLEET_STATUS_API_KEYS"] == {"name": "tuya-fleet-api-keys", "key": "status", "optional": True}
    assert (
        "FLEET_MONGODB_URI" not in (renderings["production"].component("ConfigMap", "status") or {})["data"]
    )


def accepted_variables(settings: type[BaseSettings]) -> set[str]:
    """The environment variables a settings class reads: prefix + field name, or the field's aliases."""
    prefix = str(settings.model_config.get("env_prefix", ""))
    names: set[str] = set()
    for field_name, field in settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(str(choice).upper() for choice in alias.choices if isinstance(choice, str))
        elif isinstance(alias, str):
            names.add(alias.upper())
        else:
            names.add((prefix + field_name).upper())
    return names


@pytest.mark.parametrize("name", RENDERINGS)
def test_every_configured_variable_is_a_setting_the_service_reads(
    renderings: dict[str, Rendering], name: str
) -> None:
    for component, settings in SETTINGS.items():
        config = renderings[name].component("ConfigMap", component)
        if config is None:
            continue
        accepted = accepted_variables(settings) | READ_BY_CLI.get(component, set()) | READ_BY_LIBRARIES
        accepted |= accepted_variables(TracingSettings)  # every service's `run_service` reads them
        if values()["services"][component].get("apiKeys", True):
            accepted |= accepted_variables(SecuritySettings)
        unknown = set(config["data"]) - accepted
        assert not unknown, f"{component} does not read {sorted(unknown)}"


def test_every_service_samples_traces_by_default_and_always_on_is_one_value_away(
    tools: Tools, renderings: dict[str, Rendering], tmp_path: Path
) -> None:
    configs = [
        *renderings["defaults"].of_kind("ConfigMap").items(),
        *renderings["all-services"].of_kind("ConfigMap").items(),
    ]
    assert len(configs) >= len(SETTINGS)
    for component, config in configs:
        data = config["data"]
        sampler = (data["OTEL_TRACES_SAMPLER"], data["OTEL_TRACES_SAMPLER_ARG"])
        assert sampler == ("parentbased_traceidratio", "0.05"), component
        settings = TracingSettings.model_validate(
            {"OTEL_TRACES_SAMPLER": sampler[0], "OTEL_TRACES_SAMPLER_ARG": sampler[1]}
        )
        described = sampler_of(settings, exporting=True).get_description()
        assert described.startswith("ParentBased{root:TraceIdRatioBased{0.05}")
    every = ["--set", "observability.tracesSampler=always_on", "--set", "observability.tracesSamplerArg="]
    data = (render(tools, tmp_path / "always.yaml", *every).component("ConfigMap", "status") or {})["data"]
    assert data["OTEL_TRACES_SAMPLER"] == "always_on"
    assert "OTEL_TRACES_SAMPLER_ARG" not in data


def test_production_oidc_settings_reach_the_api_services(renderings: dict[str, Rendering]) -> None:
    status = renderings["production"].component("ConfigMap", "status")
    ingest = renderings["production"].component("ConfigMap", "ingest")
    assert status
    assert ingest
    assert status["data"]["FLEET_OIDC_ISSUER"] == "https://login.example.com/realms/platform"
    assert SecuritySettings(oidc_algorithms=yaml.safe_load(status["data"]["FLEET_OIDC_ALGORITHMS"]))
    assert "FLEET_OIDC_ISSUER" not in ingest["data"]  # ingest has no API to protect


def test_prometheus_rule_is_the_rules_file(renderings: dict[str, Rendering]) -> None:
    rules = renderings["production"].of_kind("PrometheusRule")
    assert len(rules) == 1
    assert next(iter(rules.values()))["spec"] == yaml.safe_load(RULES.read_text())
    assert not renderings["defaults"].of_kind("PrometheusRule")


def test_service_monitor_labels_what_the_rules_select(renderings: dict[str, Rendering]) -> None:
    monitors = renderings["all-services"].of_kind("ServiceMonitor")
    assert len(monitors) == 5
    for monitor in monitors.values():
        component = monitor["metadata"]["labels"]["app.kubernetes.io/component"]
        service = renderings["all-services"].component("Service", component)
        assert service
        assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "tuya-fleet"
        endpoint = monitor["spec"]["endpoints"][0]
        assert endpoint["relabelings"] == [{"targetLabel": "service", "replacement": component}]
    assert 'job="tuya-fleet"' in RULES.read_text()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["--set", "tuya.existingSecret="], "tuya.existingSecret is required"),
        (["--set", "tuya.openapiUrl="], "tuya.openapiUrl is required"),
        (["--set", "services.ingest.command=null"], "services.ingest.command"),
        (["--set", "services.Bad_Name.command={x}"], "not a valid service name"),
        (["--set", "services.status.autoscaling.minReplicas=20"], "minReplicas exceeds maxReplicas"),
        # values.schema.json: typos and impossible values
        (["--set", "services.status.replica=3"], "additional properties 'replica' not allowed"),
        (["--set", "tuya.region=Mars"], "/tuya/region"),
        (["--set", "pulsar.url=http://pulsar:6650"], "/pulsar/url"),
        (["--set", "tls.caBundle.configMap=ca", "--set", "tls.caBundle.secret=ca"], "not both"),
        (["--set", "tls.caBundle.file=/ca.pem"], "additional properties 'file' not allowed"),
    ],
)
def test_bad_values_fail_with_a_clear_message(tools: Tools, overrides: list[str], message: str) -> None:
    result = run(tools.helm, "template", "fleet", CHART, "-f", PRODUCTION_EXAMPLE, *overrides)
    assert result.returncode != 0
    assert message in result.stderr


@pytest.mark.parametrize("name", RENDERINGS)
def test_each_service_loads_its_settings_from_the_rendered_environment(
    renderings: dict[str, Rendering], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for component, settings in SETTINGS.items():
        config = renderings[name].component("ConfigMap", component)
        if config is None:
            continue
        with monkeypatch.context() as env:
            for variable in [v for v in os.environ if v.startswith(("FLEET_", "OTEL_"))]:
                env.delenv(variable)
            for variable, value in config["data"].items():
                env.setenv(variable, value)
            # what the Secrets would add (any value of the right shape)
            env.setenv("FLEET_TUYA_ACCESS_SECRET", "s" * 32)
            loaded = settings()
            # tuya-sim's settings extend the kit's too (it serves Tuya's API, so it has no OpenAPI URL)
            assert isinstance(loaded, ServiceSettings)
            assert (loaded.http_host, loaded.http_port) == POD_ADDRESS
            assert loaded.pulsar_url == config["data"]["FLEET_PULSAR_URL"]
            if component != "tuya-sim":
                assert loaded.tuya_openapi_url == config["data"]["FLEET_TUYA_OPENAPI_URL"]
            if "FLEET_OIDC_ISSUER" in config["data"]:
                assert SecuritySettings().oidc_audience == "tuya-fleet"
            if name == "secured":
                assert loaded.pulsar_tls_trust_certs_file == CA_FILE


def test_a_service_can_mount_a_file_of_its_own(tools: Tools) -> None:
    """e.g. the CA of Tuya's push service for FLEET_TUYA_TLS_TRUST_CERTS_FILE."""
    result = run(
        tools.helm, "template", "fleet", CHART,
        "--set-json", 'services.ingest.extraVolumes=[{"name": "tuya-ca", "configMap": {"name": "tuya-ca"}}]',
        "--set-json", 'services.ingest.extraVolumeMounts=[{"name": "tuya-ca", "mountPath": "/etc/tuya"}]',
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    ingest = next(
        o
        for o in yaml.safe_load_all(result.stdout)
        if o and o["kind"] == "Deployment" and o["metadata"]["name"] == "fleet-tuya-fleet-ingest"
    )
    spec = ingest["spec"]["template"]["spec"]
    assert {"name": "tuya-ca", "configMap": {"name": "tuya-ca"}} in spec["volumes"]
    assert {"name": "tuya-ca", "mountPath": "/etc/tuya"} in spec["containers"][0]["volumeMounts"]


def test_secured_pods_mount_the_private_ca_and_point_every_client_at_it(
    renderings: dict[str, Rendering],
) -> None:
    rendering = renderings["secured"]
    specs = pod_specs(rendering)
    assert len(specs) == 6  # five services and the provisioning Job
    for where, spec in specs.items():
        volume = {"name": "ca-bundle", "configMap": {"name": "fleet-private-ca", "items": [
            {"key": "ca.pem", "path": "ca.crt"}]}}  # fmt: skip
        assert volume in spec["volumes"], where
        mount = {"name": "ca-bundle", "mountPath": "/etc/tuya-fleet/ca", "readOnly": True}
        assert mount in spec["containers"][0]["volumeMounts"], where
    for deployment in rendering.of_kind("Deployment").values():
        component = deployment["metadata"]["labels"]["app.kubernetes.io/component"]
        config = rendering.component("ConfigMap", component)
        assert config
        assert config["data"]["FLEET_PULSAR_TLS_TRUST_CERTS_FILE"] == CA_FILE, component
        assert config["data"]["SSL_CERT_FILE"] == CA_FILE, component
    # without a bundle: no volume, no variable
    for where, spec in pod_specs(renderings["production"]).items():
        assert "ca-bundle" not in {v["name"] for v in spec["volumes"]}, where
    for config in renderings["production"].of_kind("ConfigMap").values():
        assert not {"SSL_CERT_FILE", "FLEET_PULSAR_TLS_TRUST_CERTS_FILE"} & set(config["data"])


def test_secured_services_and_job_authenticate_to_pulsar_with_the_token_secret(
    renderings: dict[str, Rendering],
) -> None:
    token = {"name": "pulsar-client-token", "key": "token"}
    for where, spec in pod_specs(renderings["secured"]).items():
        env = {e["name"]: e for e in spec["containers"][0].get("env", [])}
        assert env["FLEET_PULSAR_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == token, where
    job = renderings["secured"].component("Job", "provisioning")
    assert job
    container = job["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["FLEET_PULSAR_TLS_TRUST_CERTS_FILE"] == CA_FILE
    assert env["SSL_CERT_FILE"] == CA_FILE
    assert "https://pulsar-proxy.pulsar.svc.cluster.local:443" in container["command"]
    # the token is never a command-line argument (visible in the process list)
    assert not any("token" in str(arg).lower() for arg in container["command"])
    for where, spec in pod_specs(renderings["production"]).items():
        names = {e["name"] for e in spec["containers"][0].get("env", [])}
        assert "FLEET_PULSAR_AUTH_TOKEN" not in names, where


def test_the_private_ca_can_come_from_a_secret(tools: Tools) -> None:
    result = run(tools.helm, "template", "fleet", CHART, "--set", "tls.caBundle.secret=fleet-ca")
    assert result.returncode == 0, result.stderr
    workloads = [o for o in yaml.safe_load_all(result.stdout) if o and o["kind"] in WORKLOADS]
    assert workloads
    for workload in workloads:
        volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
        assert volumes["ca-bundle"]["secret"] == {
            "secretName": "fleet-ca",
            "items": [{"key": "ca.crt", "path": "ca.crt"}],
        }
