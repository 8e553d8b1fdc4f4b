"""The one list of tuya-fleet's services. Adding a service is its folder under `services/` plus one entry
here: the local stack starts it (when its console script is installed), gives it its port and API key, and the
`fleet` CLI and the e2e helper find it by name.

Per service with an HTTP API (`api_key=True`), each local stack keeps a key in `<stack dir>/<name>-api-key`
(0600), seeded into the service as `FLEET_<SERVICE>_API_KEYS=devstack:<key>`; the demo and the CLI read it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

#: the name the local stack's key has in every service's key store
STACK_API_KEY_NAME = "devstack"


@dataclass(frozen=True)
class ServiceEntry:
    name: str  # as in `services/<name>`, logs, metrics and `fleet <name> ...`
    package: str  # its Python package
    command: tuple[str, ...]  # console script and arguments that serve it
    dev_port: int  # its HTTP port on the local dev stack
    api_key: bool = True  # its HTTP API takes bearer API keys seeded from FLEET_<SERVICE>_API_KEYS
    # extra environment on the local stack
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    env_prefix: str = ""  # its own settings' prefix; default FLEET_<NAME>

    def __post_init__(self) -> None:
        if not self.env_prefix:
            object.__setattr__(self, "env_prefix", "FLEET_" + self.name.upper().replace("-", "_"))

    @property
    def script(self) -> str:
        return self.command[0]

    @property
    def url_variable(self) -> str:
        """Where the CLI and tools look for the service's base URL (`FLEET_STATUS_URL`)."""
        return f"{self.env_prefix}_URL"

    @property
    def api_keys_variable(self) -> str:
        """The setting that seeds its API keys at start (`FLEET_STATUS_API_KEYS=name:key,...`)."""
        return f"{self.env_prefix}_API_KEYS"

    @property
    def key_file(self) -> str:
        """The file name of the stack's API key, inside the stack folder."""
        return f"{self.name}-api-key"

    @property
    def dev_url(self) -> str:
        return f"http://127.0.0.1:{self.dev_port}"


# Start order: the simulator (Tuya's cloud) first, then the consumer of its stream, then the domain services.
SERVICES: tuple[ServiceEntry, ...] = (
    # its control API takes FLEET_SIM_CONTROL_TOKEN, not API keys
    ServiceEntry(
        "tuya-sim", "fleet_tuya_sim", ("fleet-tuya-sim", "serve"), 9010, api_key=False, env_prefix="FLEET_SIM"
    ),
    ServiceEntry("ingest", "fleet_ingest", ("fleet-ingest",), 8001, api_key=False),
    ServiceEntry("status", "fleet_status", ("fleet-status",), 8002),
    # the stack's key opens sessions (`fleet pair`): pairing:write is the operator role's
    ServiceEntry(
        "pairing",
        "fleet_pairing",
        ("fleet-pairing",),
        8003,
        env=MappingProxyType({"FLEET_API_KEY_DEFAULT_ROLE": "operator"}),
    ),
    # the stack's key (seeded without roles) may run and approve batches: `fleet unbind` works out of the box
    ServiceEntry(
        "unbinding",
        "fleet_unbinding",
        ("fleet-unbinding",),
        8004,
        env=MappingProxyType({"FLEET_API_KEY_DEFAULT_ROLE": "admin"}),
    ),
    # the stack's key registers firmware and runs releases (the default role only reads); a failed upgrade
    # is retried after seconds, not minutes, so a failing region halts while `just demo` watches
    ServiceEntry(
        "ota",
        "fleet_ota",
        ("fleet-ota",),
        8005,
        env=MappingProxyType(
            {
                "FLEET_API_KEY_DEFAULT_ROLE": "firmware",
                "FLEET_OTA_RETRY_BACKOFF_S": "3",
                "FLEET_OTA_RETRY_BACKOFF_MAX_S": "10",
            }
        ),
    ),
)


def service(name: str) -> ServiceEntry:
    """The entry named `name`; KeyError naming the known ones otherwise."""
    for entry in SERVICES:
        if entry.name == name:
            return entry
    raise KeyError(f"no service {name!r}; known: {', '.join(e.name for e in SERVICES)}")
