"""`fleet trace`: traces of a device, batch or release from Zipkin's API, as trees (a Zipkin API at the HTTP
seam)."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from rich.console import Console

from fleet_shared.cli.errors import UsageError
from fleet_shared.cli.trace import lookback_ms, trace_tree
from fleet_shared.tracing.zipkin import ZipkinError, ZipkinQuery, services_in, span_tree

pytestmark = pytest.mark.unit


def span(span_id: str, parent: str | None, service: str, name: str, at: int, **tags: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "traceId": "t" * 32,
        "id": span_id,
        "name": name,
        "timestamp": at,
        "duration": 1500,
        "localEndpoint": {"serviceName": service},
        "tags": tags,
    }
    if parent is not None:
        out["parentId"] = parent
    return out


TRACE = [
    span("c", "b", "status", "persistent://fleet/device/events process", 30, **{"fleet.device_id": "dev-1"}),
    span("a", None, "tuya-sim", "out/event publish", 10),
    span("b", "a", "ingest", "out/event process", 20),
    span("d", "c", "status", "update shadows", 40, error="write conflict"),
    span("e", "missing", "status", "orphan", 50),
]


def test_span_tree_nests_children_under_parents_in_start_order() -> None:
    roots = span_tree(TRACE)
    assert [r.span["id"] for r in roots] == ["a", "e"]  # a parent that was not exported leaves a root
    assert [n.span["id"] for n in roots[0].walk()] == ["a", "b", "c", "d"]
    assert services_in(TRACE) == {"tuya-sim", "ingest", "status"}


def test_the_terminal_tree_shows_service_span_duration_and_status() -> None:
    console = Console(width=160, record=True)
    console.print(trace_tree(TRACE))
    text = console.export_text()
    assert "tuya-sim" in text
    assert "ingest" in text
    assert "update shadows  1.5 ms  ERROR" in text
    assert "out/event process  1.5 ms  ok" in text


def zipkin(handler: Any) -> ZipkinQuery:
    return ZipkinQuery("http://zipkin.test", http=httpx.Client(transport=httpx.MockTransport(handler)))


def test_traces_of_an_id_asks_every_id_attribute_and_merges_newest_first() -> None:
    asked: list[str] = []
    older = [dict(s, traceId="1" * 32) for s in TRACE[:2]]
    newer = [dict(s, traceId="2" * 32, timestamp=s["timestamp"] + 1000) for s in TRACE[:2]]

    def handle(request: httpx.Request) -> httpx.Response:
        query = request.url.params["annotationQuery"]
        asked.append(query)
        assert request.url.params["lookback"] == "600000"
        found = {"fleet.device_id=dev-1": [older, newer], "fleet.batch_id=dev-1": [older]}
        return httpx.Response(200, json=found.get(query, []))

    traces = zipkin(handle).traces_of("dev-1", lookback_ms=600_000, limit=5)
    assert asked == ["fleet.device_id=dev-1", "fleet.batch_id=dev-1", "fleet.release_id=dev-1"]
    assert [t[0]["traceId"] for t in traces] == ["2" * 32, "1" * 32]


def test_viewer_failures_are_clear_errors() -> None:
    with pytest.raises(ZipkinError, match="HTTP 500"):
        zipkin(lambda r: httpx.Response(500, text="boom")).traces(service="status")

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    with pytest.raises(ZipkinError, match="unreachable"):
        zipkin(down).traces(service="status")


@pytest.mark.parametrize(
    ("text", "ms"), [("90s", 90_000), ("15m", 900_000), ("2h", 7_200_000), ("7d", 604_800_000)]
)
def test_lookback(text: str, ms: int) -> None:
    assert lookback_ms(text) == ms


@pytest.mark.parametrize("text", ["", "0m", "5", "1w", "-1h"])
def test_bad_lookback_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError):
        lookback_ms(text)


def test_each_local_stack_has_its_own_trace_viewer_and_exports_its_addresses() -> None:
    from fleet_devstack.config import StackConfig

    dev, test = StackConfig.load("dev"), StackConfig.load("test")
    assert dev.zipkin_port != test.zipkin_port
    env = test.client_env()
    assert env["FLEET_ZIPKIN_ENDPOINT"] == f"http://127.0.0.1:{test.zipkin_port}/api/v2/spans"
    assert env["FLEET_ZIPKIN_URL"] == f"http://127.0.0.1:{test.zipkin_port}"


def test_the_zipkin_server_is_pinned_on_maven_central_as_the_exec_jar() -> None:
    import xml.etree.ElementTree as ET

    from fleet_devstack.config import repo_root

    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    pom = ET.parse(repo_root() / "infra" / "zipkin" / "pom.xml").getroot()  # noqa: S314 - our own file
    (dependency,) = pom.findall("m:dependencies/m:dependency", ns)
    assert dependency.findtext("m:groupId", namespaces=ns) == "io.zipkin"
    assert dependency.findtext("m:artifactId", namespaces=ns) == "zipkin-server"
    assert dependency.findtext("m:classifier", namespaces=ns) == "exec"
    version = pom.findtext("m:properties/m:zipkin.version", namespaces=ns) or ""
    assert re.fullmatch(r"\d+\.\d+\.\d+", version), version


def run_cli(handler: Any, *args: str) -> Any:
    from typer.testing import CliRunner

    from fleet_shared.cli import app
    from fleet_shared.cli.http import CliContext

    env = {"FLEET_ZIPKIN_URL": "http://zipkin.test"}
    context = CliContext(env=env, transport=httpx.MockTransport(handler))
    return CliRunner().invoke(app, list(args), obj=context)


def test_fleet_trace_prints_the_trees_of_a_devices_traces() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        assert request.url.host == "zipkin.test"
        tagged = request.url.params["annotationQuery"] == "fleet.device_id=dev-1"
        return httpx.Response(200, json=[TRACE] if tagged else [])

    result = run_cli(handle, "trace", "dev-1", "--lookback", "30m")
    assert result.exit_code == 0, result.stderr
    assert "trace " + "t" * 32 in result.stdout
    assert "out/event publish" in result.stdout

    as_json = run_cli(handle, "trace", "dev-1", "--json")
    assert as_json.exit_code == 0, as_json.stderr
    assert '"traceId"' in as_json.stdout


def test_fleet_trace_fails_clearly_when_nothing_is_found_or_the_input_is_bad() -> None:
    nothing = run_cli(lambda r: httpx.Response(200, json=[]), "trace", "dev-2")
    assert nothing.exit_code == 1
    assert "no traces of dev-2" in nothing.stderr
    bad = run_cli(lambda r: httpx.Response(200, json=[]), "trace", "dev 2; rm")
    assert bad.exit_code == 2
    late = run_cli(lambda r: httpx.Response(200, json=[]), "trace", "dev-2", "--lookback", "soon")
    assert late.exit_code == 2
