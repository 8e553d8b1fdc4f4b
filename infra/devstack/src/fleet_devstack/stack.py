"""The local stack as one object: what `just up/down/status` and the reliability tests drive."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from .config import StackConfig
from .servers import FerretDB, Pulsar, Server

PULSAR_START_TIMEOUT = 180.0
FERRETDB_START_TIMEOUT = 30.0


class LocalStack:
    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.pulsar = Pulsar(config)
        self.ferretdb = FerretDB(config)

    @classmethod
    def from_env(cls, name: str | None = None) -> LocalStack:
        return cls(StackConfig.load(name))

    def install(self) -> None:
        """Fetch and build both servers (in parallel: Maven and Go download at the same time)."""
        with ThreadPoolExecutor(max_workers=2) as pool:
            for future in [pool.submit(self.pulsar.install), pool.submit(self.ferretdb.install)]:
                future.result()

    def up(self) -> dict[str, float]:
        """Start what is not running, wait until healthy, provision Pulsar; seconds taken per step."""
        timings: dict[str, float] = {}
        began = time.monotonic()
        self.install()
        timings["install"] = time.monotonic() - began
        started = time.monotonic()
        self.ferretdb.start(FERRETDB_START_TIMEOUT)
        self.pulsar.start(PULSAR_START_TIMEOUT)
        self.ferretdb.wait_healthy(FERRETDB_START_TIMEOUT)
        self.pulsar.wait_healthy(PULSAR_START_TIMEOUT)
        timings["start"] = time.monotonic() - started
        self.provision()
        timings["total"] = time.monotonic() - began
        return timings

    def provision(self) -> None:
        self.pulsar.provision()

    def down(self) -> list[str]:
        """Stop both servers; the names of those that were running."""
        return [server.name for server in (self.pulsar, self.ferretdb) if server.stop()]

    def servers(self) -> list[Server]:
        return [self.pulsar, self.ferretdb]

    # Used by reliability tests: restart one server under running services.
    def stop_pulsar(self) -> None:
        self.pulsar.stop()

    def start_pulsar(self) -> None:
        self.pulsar.start(PULSAR_START_TIMEOUT)
        self.pulsar.wait_healthy(PULSAR_START_TIMEOUT)

    def restart_pulsar(self) -> None:
        self.stop_pulsar()
        self.start_pulsar()

    def stop_mongo(self) -> None:
        self.ferretdb.stop()

    def start_mongo(self) -> None:
        self.ferretdb.start(FERRETDB_START_TIMEOUT)
        self.ferretdb.wait_healthy(FERRETDB_START_TIMEOUT)

    def restart_mongo(self) -> None:
        self.stop_mongo()
        self.start_mongo()

    def endpoints(self) -> list[tuple[str, str]]:
        cfg = self.config
        return [
            ("Pulsar broker", cfg.pulsar_url),
            ("Pulsar admin REST", cfg.pulsar_admin_url),
            ("Pulsar WebSocket", cfg.pulsar_websocket_url),
            ("MongoDB wire (FerretDB)", cfg.mongodb_uri),
            ("Tuya push topic (simulated)", f"persistent://{cfg.tuya_access_id}/out/event"),
        ]
