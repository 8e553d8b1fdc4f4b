"""The servers of the local stack: Apache Pulsar standalone, FerretDB and the Zipkin trace viewer."""

from __future__ import annotations

import string
import urllib.error
import urllib.request
from pathlib import Path

from pymongo import MongoClient
from pymongo.errors import PyMongoError

from .build import ferretdb_binary, pulsar_classpath, zipkin_jar
from .config import StackConfig
from .process import ManagedProcess, StackError, port_in_use, wait_until

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


class Zipkin(Server):
    """The trace viewer: Zipkin's executable jar with in-memory storage (traces last until `down`), bounded
    in heap and in spans kept, so a long demo cannot grow it without limit."""

    name = "zipkin"
    # a span with its attributes takes 1-2 KB of Zipkin's heap: 200k spans ran a 256 MiB heap out of memory
    # during the test suite (every service exports every span); the oldest traces go first beyond this
    max_spans = 50_000

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
            "MEM_MAX_SPANS": str(self.max_spans),
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
