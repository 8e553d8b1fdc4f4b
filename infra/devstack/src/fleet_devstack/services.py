"""tuya-fleet's own services as local processes, beside the stack (what `just up` starts after the servers).

Which services there are comes from the one registry, `fleet_shared.service.registry.SERVICES`. A service is
started only if its console script is installed in the workspace, so `just up` grows as services land. Each
gets the stack's addresses, its own HTTP port, and the simulated Tuya project's credentials (a random secret
per stack, kept in a 0600 file in the stack folder and never printed). Every service with an HTTP API also
gets an API key made per stack and kept the same way (`<service>-api-key`, seeded as
`FLEET_<SERVICE>_API_KEYS`): the demo and the `fleet` CLI read it from there to call the API.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from fleet_shared.service.registry import SERVICES, STACK_API_KEY_NAME, ServiceEntry, service
from fleet_shared.service.telemetry import sampling_env

from .config import StackConfig
from .process import ManagedProcess, StackError, port_in_use, wait_until

__all__ = ["SERVICES", "LocalService", "ServiceEntry", "api_key", "status_api_key", "tuya_secret"]

SERVICE_START_TIMEOUT = 60.0


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


def api_key(config: StackConfig, name: str) -> str:
    """The key of service `name`'s HTTP API on this stack (`Authorization: Bearer <key>`), seeded at start."""
    entry = service(name)
    if not entry.api_key:
        raise ValueError(f"{name} has no API keys")
    return _stack_secret(config, entry.key_file, lambda: secrets.token_urlsafe(32))


def status_api_key(config: StackConfig) -> str:
    return api_key(config, "status")


class LocalService:
    def __init__(self, config: StackConfig, spec: ServiceEntry) -> None:
        self.config = config
        self.spec = spec
        self.name = spec.name
        self.home = config.stack_dir / "services" / spec.name
        self.process = ManagedProcess(
            spec.name, self.home / f"{spec.name}.pid", self.home / f"{spec.name}.out"
        )

    def executable(self) -> Path | None:
        found = shutil.which(self.spec.script, path=str(Path(sys.executable).parent))
        return Path(found) if found else None

    def installed(self) -> bool:
        return self.executable() is not None

    def ports(self) -> list[int]:
        return [self.spec.dev_port]

    def url(self) -> str:
        return self.spec.dev_url

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url()}/healthz", timeout=2) as resp:  # noqa: S310 - loopback
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def env(self) -> dict[str, str]:
        own = dict(self.spec.env)
        if self.spec.api_key:
            own[self.spec.api_keys_variable] = f"{STACK_API_KEY_NAME}:{api_key(self.config, self.name)}"
        return {
            **self.config.client_env(),
            "FLEET_HTTP_HOST": "127.0.0.1",
            "FLEET_HTTP_PORT": str(self.spec.dev_port),
            "FLEET_LOG_FORMAT": "json",
            "FLEET_TUYA_ACCESS_SECRET": tuya_secret(self.config),
            "FLEET_TUYA_OPENAPI_URL": service("tuya-sim").dev_url,
            # sampled traces (a ratio decided where a trace starts) unless `./dev up` is given a sampler
            **sampling_env(os.environ),
            # the marker by which `down` recognises this process (its argv carries no stack path)
            "FLEET_SERVICE_HOME": str(self.home),
            **own,
        }

    def start(self) -> bool:
        if self.process.pid() is not None:
            return False
        port = self.spec.dev_port
        if port_in_use(port):
            raise StackError(f"cannot start {self.name}: port {port} is in use by another process")
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
