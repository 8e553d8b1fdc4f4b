"""`./dev docs` (infra/docs/render.sh): the AsyncAPI document becomes one HTML page whose server-rendered
markup names every channel, topic and event type; an invalid document is refused with the parser's reasons.

Needs Node.js; the first run installs the pinned renderer from npm into .cache/docs (later runs reuse it)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import orjson
import pytest

from fleet_contracts import export, topics
from fleet_contracts.asyncapi import channel_id

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

RENDER = Path(__file__).resolve().parents[3] / "infra" / "docs" / "render.sh"


def render(document: Path, page: Path) -> subprocess.CompletedProcess[str]:
    if shutil.which("node") is None:
        pytest.fail("Node.js is not installed: `./dev docs` needs it", pytrace=False)
    return subprocess.run(
        [str(RENDER), str(document), str(page)], capture_output=True, text=True, timeout=540
    )


def test_the_page_names_every_channel_topic_and_event_type(tmp_path: Path) -> None:
    page = tmp_path / "docs" / "asyncapi.html"
    done = render(export.SCHEMA_DIR / export.ASYNCAPI_FILE, page)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == str(page)  # it says where the page is
    html = page.read_text()
    # what the renderer drew on the server, not the document embedded for the browser's hydration
    markup = html[html.index('<div id="asyncapi">') : html.index("<script>")]
    assert "tuya-fleet events" in markup
    missing = [
        name
        for topic in topics.ALL
        for name in (channel_id(topic), topic.name, *topic.envelope_classes())
        if name not in markup
    ]
    assert missing == []


def test_an_invalid_document_is_refused_with_reasons(tmp_path: Path) -> None:
    document = tmp_path / "broken.json"
    document.write_bytes(orjson.dumps({"asyncapi": "3.0.0", "info": {"title": "no version"}, "channels": {}}))
    page = tmp_path / "broken.html"
    done = render(document, page)
    assert done.returncode == 1
    assert "version" in done.stderr
    assert "not a valid AsyncAPI document" in done.stderr
    assert not page.exists()
