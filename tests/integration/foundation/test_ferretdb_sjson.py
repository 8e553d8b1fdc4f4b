"""The one-pass sjson codec the local FerretDB is built with (fleet_devstack.ferretdb_patch, change 9): its
differential test against FerretDB's own Marshal and Unmarshal, and FerretDB's own sjson tests, run with
`go test` in the patched copy of FerretDB's module the server is built from."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from fleet_devstack.build import ferretdb_source
from fleet_devstack.config import StackConfig

pytestmark = pytest.mark.integration

# infra/ferretdb/_patch/internal/handler/sjson/fleet_fast_test.go
DIFFERENTIAL = {
    "TestFleetGeneratedDocuments",
    "TestFleetMutatedTexts",
    "TestFleetHandWrittenTexts",
    "TestFleetServiceShapes",
}


def test_one_pass_sjson_decodes_and_encodes_as_ferretdb_does() -> None:
    go = shutil.which("go")
    assert go is not None, "Go builds the local FerretDB: it must be on PATH"
    module = ferretdb_source(StackConfig.load("test"))
    result = subprocess.run(
        [go, "test", "-count=1", "-v", "./internal/handler/sjson/"],
        cwd=module,
        capture_output=True,
        text=True,
        check=False,
        timeout=1200,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-8000:]
    passed = set(re.findall(r"^--- PASS: (\w+)", output, re.MULTILINE))
    assert passed >= DIFFERENTIAL, output[-8000:]
    # FerretDB's own sjson tests ran too, now through the patched Marshal and Unmarshal
    assert len(passed - DIFFERENTIAL) >= 5, sorted(passed)
