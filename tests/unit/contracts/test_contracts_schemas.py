"""The committed schemas in contracts/schemas are fresh; the current contracts stay compatible with them."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest

from fleet_contracts import asyncapi, compat, export, topics
from fleet_contracts.envelope import dataschema_for

pytestmark = pytest.mark.unit

COMMITTED = export.SCHEMA_DIR
COMMITTED_TYPES = sorted(
    p.name.removesuffix(".json") for p in COMMITTED.glob("*.json") if p.name != "asyncapi.json"
)


def test_schema_dir_is_the_repositorys() -> None:
    assert COMMITTED.parts[-2:] == ("contracts", "schemas")
    assert COMMITTED.is_dir()


def test_committed_schemas_are_fresh(capsys: pytest.CaptureFixture[str]) -> None:
    code = export.main(["--check"])
    assert code == 0, capsys.readouterr().err


def test_every_event_type_has_a_committed_schema() -> None:
    assert set(COMMITTED_TYPES) == set(topics.envelope_classes())


@pytest.mark.parametrize("event_type", COMMITTED_TYPES)
def test_current_contract_is_backward_compatible_with_the_committed_one(event_type: str) -> None:
    committed = orjson.loads((COMMITTED / f"{event_type}.json").read_bytes())
    current = export.event_schemas().get(event_type)
    assert current is not None, f"{event_type} was removed; keep it (consumers may still read it)"
    problems = compat.incompatibilities(committed, current)
    assert problems == [], "\n".join(map(str, problems)) + "\n-> publish a new .vN type instead"


@pytest.mark.parametrize("event_type", COMMITTED_TYPES)
def test_committed_schema_is_identified_by_its_dataschema(event_type: str) -> None:
    schema = orjson.loads((COMMITTED / f"{event_type}.json").read_bytes())
    assert schema["$id"] == dataschema_for(event_type)
    assert schema["properties"]["type"]["const"] == event_type
    assert {"specversion", "type", "id", "source", "time", "tenant", "region", "data"} <= set(
        schema["required"]
    )


@pytest.fixture
def copy_of_schemas(tmp_path: Path) -> Path:
    target = tmp_path / "schemas"
    shutil.copytree(COMMITTED, target)
    return target


def test_check_fails_on_an_edited_file(copy_of_schemas: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = copy_of_schemas / "device.online.v1.json"
    path.write_bytes(path.read_bytes().replace(b'"title": "Device Id"', b'"title": "Dev"'))
    assert export.main(["--check", "--out", str(copy_of_schemas)]) == 1
    assert "stale" in capsys.readouterr().err


def test_check_fails_on_a_missing_or_extra_file(copy_of_schemas: Path) -> None:
    (copy_of_schemas / "asyncapi.json").unlink()
    assert export.main(["--check", "--out", str(copy_of_schemas)]) == 1
    assert export.main(["--out", str(copy_of_schemas)]) == 0
    (copy_of_schemas / "device.gone.v1.json").write_bytes(b"{}")
    assert export.stale_files(copy_of_schemas) == ["device.gone.v1.json"]


def test_export_writes_everything_into_an_empty_directory(tmp_path: Path) -> None:
    assert export.main(["--out", str(tmp_path)]) == 0
    assert export.stale_files(tmp_path) == []
    assert export.main(["--check", "--out", str(tmp_path)]) == 0


def test_export_refuses_to_overwrite_an_incompatible_change(
    copy_of_schemas: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Pretend the committed contract had a field the current one lacks.
    path = copy_of_schemas / "device.online.v1.json"
    schema = orjson.loads(path.read_bytes())
    schema["properties"]["legacy"] = {"type": "string"}
    path.write_bytes(orjson.dumps(schema))

    assert export.main(["--out", str(copy_of_schemas)]) == 1
    err = capsys.readouterr().err
    assert "removed field at legacy" in err
    assert orjson.loads(path.read_bytes())["properties"]["legacy"] == {"type": "string"}  # untouched
    assert export.main(["--check", "--out", str(copy_of_schemas)]) == 1
    assert export.main(["--out", str(copy_of_schemas), "--allow-breaking"]) == 0
    assert export.stale_files(copy_of_schemas) == []


def test_a_removed_event_type_is_a_breaking_change(copy_of_schemas: Path) -> None:
    shutil.copy(copy_of_schemas / "device.online.v1.json", copy_of_schemas / "device.teleported.v1.json")
    problems = export.breaking_changes(copy_of_schemas)
    assert list(problems) == ["device.teleported.v1.json"]


# AsyncAPI


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    committed: dict[str, Any] = orjson.loads((COMMITTED / "asyncapi.json").read_bytes())
    return committed


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/")
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_asyncapi_describes_every_topic(document: dict[str, Any]) -> None:
    assert document["asyncapi"] == "3.0.0"
    assert document["servers"]["pulsar"]["protocol"] == "pulsar"
    addresses = {c["address"]: c for c in document["channels"].values()}
    assert set(addresses) == {t.name for t in topics.ALL}
    for topic in topics.ALL:
        channel = addresses[topic.name]
        assert set(channel["messages"]) == set(topic.envelope_classes())
        assert channel["x-fleet-subscription-type"] == topic.subscription.value


def test_asyncapi_operations_send_by_producer_and_receive_by_consumers(document: dict[str, Any]) -> None:
    operations = document["operations"]
    for topic in topics.ALL:
        cid = asyncapi.channel_id(topic)
        assert operations[f"{topic.producer.value}.send.{cid}"]["action"] == "send"
        for consumer in topic.consumers:
            assert operations[f"{consumer.value}.receive.{cid}"]["action"] == "receive"


def test_asyncapi_references_all_resolve(document: dict[str, Any]) -> None:
    refs = _refs(document)
    assert refs
    for ref in refs:
        _resolve(document, ref)


def test_asyncapi_messages_carry_the_envelope_payloads(document: dict[str, Any]) -> None:
    for event_type in topics.envelope_classes():
        message = document["components"]["messages"][event_type]
        payload = _resolve(document, message["payload"]["$ref"])
        assert payload["properties"]["type"]["const"] == event_type
