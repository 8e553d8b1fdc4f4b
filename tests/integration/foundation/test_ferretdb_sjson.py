"""Go tests of the patches the local FerretDB is built with (fleet_devstack.ferretdb_patch), run with
`go test` in the patched copy of FerretDB's module the server is built from: the one-pass sjson codec
(change 9) against FerretDB's own Marshal and Unmarshal, with FerretDB's own sjson tests; the kept
prepared statements (change 10), with FerretDB's own fsql tests."""

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


def go_test(package: str) -> set[str]:
    """`go test -v` of a package of the patched module; the tests that passed (the run must pass)."""
    go = shutil.which("go")
    assert go is not None, "Go builds the local FerretDB: it must be on PATH"
    module = ferretdb_source(StackConfig.load("test"))
    result = subprocess.run(
        [go, "test", "-count=1", "-v", package],
        cwd=module,
        capture_output=True,
        text=True,
        check=False,
        timeout=1200,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-8000:]
    return set(re.findall(r"^--- PASS: (\w+)", output, re.MULTILINE))


def test_one_pass_sjson_decodes_and_encodes_as_ferretdb_does() -> None:
    passed = go_test("./internal/handler/sjson/")
    assert passed >= DIFFERENTIAL, sorted(passed)
    # FerretDB's own sjson tests ran too, now through the patched Marshal and Unmarshal
    assert len(passed - DIFFERENTIAL) >= 5, sorted(passed)


def test_kept_statements_give_what_statements_prepared_per_call_give() -> None:
    passed = go_test("./internal/util/fsql/")
    assert "TestFleetKeptStatements" in passed, sorted(passed)
