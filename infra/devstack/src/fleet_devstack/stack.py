"""The local stack as one object: what `just up/down/status` and the reliability tests drive."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from .config import StackConfig
from .servers import FerretDB, Postgres, Pulsar, Server, Zipkin
from .services import SERVICES, LocalService

PULSAR_START_TIMEOUT = 180.0
FERRETDB_START_TIMEOUT = 30.0
ZIPKIN_START_TIMEOUT = 90.0
POSTGRES_START_TIMEOUT = 60.0


class LocalStack:
    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.pulsar = Pulsar(config)
        self.ferretdb = FerretDB(config)
        self.postgres = Postgres(config)
        self.zipkin = Zipkin(config)
        self.services = [LocalService(config, spec) for spec in SERVICES]

    @classmethod
    def from_env(cls, name: str | None = None) -> LocalStack:
        return cls(StackConfig.load(name))

    def install(self) -> None:
        """Fetch and build the servers (in parallel: Maven and Go download at the same time)."""
        with ThreadPoolExecutor(max_workers=3) as pool:
            servers = (self.pulsar, self.ferretdb, self.zipkin, *self._database())
            for future in [pool.submit(server.install) for server in servers]:
                future.result()

    def up(self, *, with_services: bool = True) -> dict[str, float]:
        """Start what is not running, wait until healthy, provision Pulsar, start the installed services;
        seconds taken per step."""
        timings: dict[str, float] = {}
        began = time.monotonic()
        self.install()
        timings["install"] = time.monotonic() - began
        started = time.monotonic()
        self.start_database()
        self.ferretdb.start(FERRETDB_START_TIMEOUT)
        self.zipkin.start(ZIPKIN_START_TIMEOUT)
        self.pulsar.start(PULSAR_START_TIMEOUT)
        self.ferretdb.wait_healthy(FERRETDB_START_TIMEOUT)
        self.zipkin.wait_healthy(ZIPKIN_START_TIMEOUT)
        self.pulsar.wait_healthy(PULSAR_START_TIMEOUT)
        timings["start"] = time.monotonic() - started
        self.provision()
        if with_services:
            self.start_services()
        timings["total"] = time.monotonic() - began
        return timings

    def start_services(self) -> list[str]:
        started = [service for service in self.services if service.start()]
        for service in started:
            service.wait_healthy()
        return [service.name for service in started]

    def provision(self) -> None:
        self.pulsar.provision()

    def down(self) -> list[str]:
        """Stop the services, then the servers; the names of those that were running."""
        stopped = [service.name for service in reversed(self.services) if service.stop()]
        # PostgreSQL last (FerretDB holds connections to it), and whatever FLEET_DB_BACKEND says now
        servers = (self.pulsar, self.ferretdb, self.zipkin, self.postgres)
        return stopped + [server.name for server in servers if server.stop()]

    def servers(self) -> list[Server | LocalService]:
        database = self._database() or ([self.postgres] if self.postgres.process.pid() else [])
        services = (s for s in self.services if s.installed())
        return [self.pulsar, self.ferretdb, *database, self.zipkin, *services]

    def _database(self) -> list[Postgres]:
        """The server FerretDB stores its data in, when it is not FerretDB itself (SQLite files)."""
        return [self.postgres] if self.config.db_backend == "postgresql" else []

    def start_database(self) -> None:
        for server in self._database():
            server.start(POSTGRES_START_TIMEOUT)
            server.wait_healthy(POSTGRES_START_TIMEOUT)

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
        """Stop the MongoDB-wire server and what it stores in (a database restart)."""
        self.ferretdb.stop()
        for server in self._database():
            server.stop()

    def start_mongo(self) -> None:
        self.start_database()
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
            *(("FerretDB's PostgreSQL (socket)", server.url()) for server in self._database()),
            ("Traces (Zipkin web UI)", f"{cfg.zipkin_url}/zipkin/"),
            ("Tuya push topic (simulated)", f"persistent://{cfg.tuya_access_id}/out/event"),
            *(
                (f"{s.name} HTTP (docs at /docs)", s.url())
                for s in self.services
                if s.process.pid() is not None
            ),
        ]
