"""tuya-fleet's own services as local processes, beside the stack (what `just up` starts after the servers).

A service is started only if its console script is installed in the workspace, so `just up` grows as
services land. Each gets the stack's addresses, its own HTTP port, and the simulated Tuya project's
credentials (a random secret per stack, kept in a 0600 file in the stack folder and never printed).
status also gets an API key for its HTTP API, made per stack and kept the same way (`status_api_key`): the
demo reads it from there to call the API.
"""

from __future__ import annotations

import secrets
import shutil
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .config import StackConfig
from .process import ManagedProcess, StackError, port_in_use, wait_until

SERVICE_START_TIMEOUT = 60.0


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    command: tuple[str, ...]
    port: int


# Start order: the simulator (Tuya's cloud) first, then the consumers of its stream.
SERVICES = (
    ServiceSpec("tuya-sim", ("fleet-tuya-sim", "serve"), 9010),
    ServiceSpec("ingest", ("fleet-ingest",), 8001),
    ServiceSpec("status", ("fleet-status",), 8002),
)


def _stack_secret(config: StackConfig, filename: str, make: Callable[[], str]) -> str:
    """A secret of this stack kept in a 0600 file in the stack folder, created on first use."""
    path = config.stack_dir / filename
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(make())
    return path.read_text().strip()


def tuya_secret(config: StackConfig) -> str:
    """The simulated Tuya project's access secret for this stack (tuya-sim, ingest and status share it)."""
    return _stack_secret(config, "tuya-access-secret", lambda: secrets.token_hex(16))


STATUS_API_KEY_NAME = "devstack"


def status_api_key(config: StackConfig) -> str:
    """The key of status's HTTP API on this stack (`Authorization: Bearer <key>`), seeded at its start."""
    return _stack_secret(config, "status-api-key", lambda: secrets.token_urlsafe(32))


class LocalService:
    def __init__(self, config: StackConfig, spec: ServiceSpec) -> None:
        self.config = config
        self.spec = spec
        self.name = spec.name
        self.home = config.stack_dir / "services" / spec.name
        self.process = ManagedProcess(
            spec.name, self.home / f"{spec.name}.pid", self.home / f"{spec.name}.out"
        )

    def executable(self) -> Path | None:
        found = shutil.which(self.spec.command[0], path=str(Path(sys.executable).parent))
        return Path(found) if found else None

    def installed(self) -> bool:
        return self.executable() is not None

    def ports(self) -> list[int]:
        return [self.spec.port]

    def url(self) -> str:
        return f"http://127.0.0.1:{self.spec.port}"

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url()}/healthz", timeout=2) as resp:  # noqa: S310 - loopback
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def env(self) -> dict[str, str]:
        own: dict[str, str] = {}
        if self.name == "status":
            own["FLEET_STATUS_API_KEYS"] = f"{STATUS_API_KEY_NAME}:{status_api_key(self.config)}"
        return {
            **self.config.client_env(),
            "FLEET_HTTP_HOST": "127.0.0.1",
            "FLEET_HTTP_PORT": str(self.spec.port),
            "FLEET_LOG_FORMAT": "json",
            "FLEET_TUYA_ACCESS_SECRET": tuya_secret(self.config),
            "FLEET_TUYA_OPENAPI_URL": f"http://127.0.0.1:{SERVICES[0].port}",
            # the marker by which `down` recognises this process (its argv carries no stack path)
            "FLEET_SERVICE_HOME": str(self.home),
            **own,
        }

    def start(self) -> bool:
        if self.process.pid() is not None:
            return False
        if port_in_use(self.spec.port):
            raise StackError(f"cannot start {self.name}: port {self.spec.port} is in use by another process")
        executable = self.executable()
        if executable is None:
            return False
        self.home.mkdir(parents=True, exist_ok=True)
        argv = [str(executable), *self.spec.command[1:]]
        self.process.start(argv, cwd=self.home, env=self.env())
        return True

    def wait_healthy(self) -> None:
        if not wait_until(lambda: self.process.pid() is None or self.healthy(), SERVICE_START_TIMEOUT):
            raise StackError(
                f"{self.name} not healthy after {SERVICE_START_TIMEOUT:.0f}s:\n{self.process.tail()}"
            )
        if self.process.pid() is None:
            raise StackError(f"{self.name} exited during start-up:\n{self.process.tail()}")

    def stop(self) -> bool:
        return self.process.stop()
