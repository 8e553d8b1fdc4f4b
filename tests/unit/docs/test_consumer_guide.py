"""docs/consumers.md lists every topic and event type of the registry (infra/docs/consumer_guide.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from fleet_contracts import ota, status, topics

pytestmark = pytest.mark.unit

SCRIPT = Path(__file__).resolve().parents[3] / "infra" / "docs" / "consumer_guide.py"


@pytest.fixture(scope="module")
def guide() -> ModuleType:
    spec = importlib.util.spec_from_file_location("consumer_guide", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_committed_guide_is_up_to_date(guide: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    assert guide.main(["--check"]) == 0, capsys.readouterr().err


def test_the_guide_names_every_topic_and_event_type(guide: ModuleType) -> None:
    text = guide.GUIDE.read_text()
    missing = [t.name for t in topics.ALL if f"`{t.name}`" not in text]
    missing += [e for e in topics.envelope_classes() if f"`{e}`" not in text]
    assert missing == []


def test_a_stale_section_is_found_and_rewritten(guide: ModuleType) -> None:
    stale = f"intro\n{guide.BEGIN}\n| old table |\n{guide.END}\noutro\n"
    fresh = guide.updated(stale)
    assert fresh.startswith("intro\n")
    assert fresh.endswith("\noutro\n")
    assert "| old table |" not in fresh
    assert topics.OTA_RELEASE_EVENTS.name in fresh
    assert guide.updated(fresh) == fresh


def test_a_guide_without_markers_is_an_error(guide: ModuleType) -> None:
    with pytest.raises(ValueError, match="markers"):
        guide.updated("no generated section here")


def test_meaning_is_the_events_own_docstring_or_said_from_its_type(guide: ModuleType) -> None:
    assert guide.meaning(status.ShadowChangedEvent) == status.ShadowChanged.__doc__
    # no docstring of its own: an inherited one would describe the base class, so the type speaks
    assert ota.ReleasePaused.__dict__.get("__doc__") is None
    assert guide.meaning(ota.ReleasePausedEvent) == "Release paused."
