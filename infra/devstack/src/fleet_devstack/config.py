"""Where a local stack lives and which ports it uses.

Two stacks can run side by side: `dev` (what `just up` starts, on the usual ports) and `test` (what the test
command starts and stops, on ports of its own), so the suite never disturbs a running demo.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .process import StackError

# Ports per stack name: broker, admin/websocket HTTP, bookie, MongoDB wire.
_DEFAULT_PORTS = {
    "dev": (6650, 8080, 3181, 27017),
    "test": (16650, 18080, 13181, 27018),
}
# The Zipkin server (trace viewer: web UI and API, spans in over HTTP) per stack name.
_ZIPKIN_PORTS = {"dev": 9411, "test": 19411}
# Spans the viewer keeps, and its heap: ~2.6 KB of heap per stored span (measured with bench/zipkin_heap.py,
# the services' spans), so 300k spans take ~745 MiB live, 62% of 1200 MiB (room for queries and collection).
# 300k holds several parallel e2e runs (README, "Observe"); the JVM exits if the spans outgrow the heap.
ZIPKIN_MAX_SPANS = 300_000
ZIPKIN_HEAP = "1200m"


def _positive_int(name: str, default: int) -> int:
    raw = os.environ.get(name, str(default))
    try:
        value = int(raw)
    except ValueError:
        raise StackError(f"{name}={raw!r}: must be a whole number") from None
    if value < 1:
        raise StackError(f"{name}={raw!r}: must be at least 1")
    return value


# What FerretDB stores its data in: SQLite files (the default) or a PostgreSQL server of the stack's own.
DB_BACKENDS = ("sqlite", "postgresql")


def repo_root() -> Path:
    """The workspace root: the nearest folder up from here holding justfile and pyproject.toml."""
    for folder in Path(__file__).resolve().parents:
        if (folder / "justfile").exists() and (folder / "pyproject.toml").exists():
            return folder
    raise RuntimeError("fleet_devstack must run from a tuya-fleet checkout (no justfile found above it)")


@dataclass(frozen=True)
class StackConfig:
    name: str
    root: Path
    pulsar_broker_port: int
    pulsar_http_port: int
    bookie_port: int
    mongo_port: int
    pulsar_heap: str
    tuya_access_id: str
    zipkin_port: int = 9411
    zipkin_heap: str = ZIPKIN_HEAP
    zipkin_max_spans: int = ZIPKIN_MAX_SPANS
    db_backend: str = "sqlite"
    # PostgreSQL listens on a Unix socket in the stack's folder only; the port only names the socket
    postgres_port: int = 5432

    @classmethod
    def load(cls, name: str | None = None) -> StackConfig:
        """Stack settings from the environment (FLEET_STACK, FLEET_STACK_*_PORT), defaults per stack name."""
        name = name or os.environ.get("FLEET_STACK", "dev")
        broker, http, bookie, mongo = _DEFAULT_PORTS.get(name, _DEFAULT_PORTS["dev"])
        env = os.environ.get
        db_backend = env("FLEET_DB_BACKEND", "sqlite")
        if db_backend not in DB_BACKENDS:
            raise StackError(f"FLEET_DB_BACKEND={db_backend!r}: must be one of {', '.join(DB_BACKENDS)}")
        return cls(
            name=name,
            root=repo_root(),
            pulsar_broker_port=int(env("FLEET_STACK_PULSAR_PORT", broker)),
            pulsar_http_port=int(env("FLEET_STACK_PULSAR_HTTP_PORT", http)),
            bookie_port=int(env("FLEET_STACK_BOOKIE_PORT", bookie)),
            mongo_port=int(env("FLEET_STACK_MONGO_PORT", mongo)),
            pulsar_heap=env("FLEET_STACK_PULSAR_HEAP", "1g"),
            tuya_access_id=env("FLEET_TUYA_ACCESS_ID", "fleetsimaccess000001"),
            zipkin_port=int(env("FLEET_STACK_ZIPKIN_PORT", _ZIPKIN_PORTS.get(name, _ZIPKIN_PORTS["dev"]))),
            zipkin_heap=env("FLEET_STACK_ZIPKIN_HEAP", ZIPKIN_HEAP),
            zipkin_max_spans=_positive_int("FLEET_STACK_ZIPKIN_MAX_SPANS", ZIPKIN_MAX_SPANS),
            db_backend=db_backend,
            postgres_port=int(env("FLEET_STACK_POSTGRES_PORT", "5432")),
        )

    @property
    def cache(self) -> Path:
        """Downloaded jars and built binaries, shared by all stacks (ignored by git)."""
        return self.root / ".cache"

    @property
    def stack_dir(self) -> Path:
        """Data, logs and pid files of this stack."""
        return self.cache / "stacks" / self.name

    @property
    def pulsar_url(self) -> str:
        return f"pulsar://127.0.0.1:{self.pulsar_broker_port}"

    @property
    def pulsar_admin_url(self) -> str:
        return f"http://127.0.0.1:{self.pulsar_http_port}"

    @property
    def pulsar_websocket_url(self) -> str:
        return f"ws://127.0.0.1:{self.pulsar_http_port}/ws/v2"

    @property
    def mongodb_uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.mongo_port}/"

    @property
    def zipkin_url(self) -> str:
        """The trace viewer: web UI at `/zipkin/`, query API at `/api/v2/...`."""
        return f"http://127.0.0.1:{self.zipkin_port}"

    @property
    def zipkin_endpoint(self) -> str:
        """Where services send spans (Zipkin's v2 JSON spans API)."""
        return f"{self.zipkin_url}/api/v2/spans"

    def client_env(self) -> dict[str, str]:
        """The variables services and tests read to find this stack."""
        return {
            "FLEET_STACK": self.name,
            "FLEET_STACK_DIR": str(self.stack_dir),
            "FLEET_PULSAR_URL": self.pulsar_url,
            "FLEET_PULSAR_ADMIN_URL": self.pulsar_admin_url,
            "FLEET_MONGODB_URI": self.mongodb_uri,
            "FLEET_TUYA_ACCESS_ID": self.tuya_access_id,
            "FLEET_ZIPKIN_ENDPOINT": self.zipkin_endpoint,
            "FLEET_ZIPKIN_URL": self.zipkin_url,
        }
