"""The simulated cloud for the client tests: the registry's `tuya-sim` run as its console script (as the local
stack and a container run it), for one throwaway Tuya project, and Tuya's topic layout cleaned up after."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleet_shared.provisioning import ProvisioningError, PulsarAdmin
from tests.support import ServiceProcess, Stack


@dataclass(frozen=True)
class Project:
    access_id: str
    access_secret: str
    control_token: str


def new_project(unique: str) -> Project:
    return Project(f"simcl{unique}", secrets.token_hex(16), secrets.token_hex(12))


def sim_process(
    project: Project, log: Path, *, stack: Stack | None = None, env: Mapping[str, str] | None = None
) -> ServiceProcess:
    """Without a stack the push messages stay in memory; with one they go to Tuya's layout on its Pulsar."""
    own = {
        "FLEET_TUYA_ACCESS_ID": project.access_id,
        "FLEET_TUYA_ACCESS_SECRET": project.access_secret,
        "FLEET_SIM_CONTROL_TOKEN": project.control_token,
        "FLEET_SIM_DEVICES": "12",
        "FLEET_SIM_HOMES": "3",
        "FLEET_SIM_SEED": "5",
        "FLEET_SIM_RATE_LIMIT_RPS": "0",
        "FLEET_PULSAR_URL": stack.pulsar_url if stack else "",
        "FLEET_SIM_PROVISION": "true" if stack else "false",
        **(env or {}),
    }
    return ServiceProcess("tuya-sim", log=log, stack=stack, env=own, api_key=project.control_token)


@contextlib.contextmanager
def tuya_layout_removed_after(stack: Stack, access_id: str) -> Iterator[None]:
    try:
        yield
    finally:
        admin = PulsarAdmin(stack.pulsar_admin_url)
        for path in (
            f"persistent/{access_id}/out/event/partitions?force=true",
            f"persistent/{access_id}/out/event-test?force=true",
            f"namespaces/{access_id}/out",
            f"tenants/{access_id}",
        ):
            with contextlib.suppress(ProvisioningError):
                admin.call("DELETE", path)


def truth(sim: ServiceProcess, *, messages: bool = False) -> dict[str, Any]:
    status, body = sim.get("/sim/truth", {"messages": "true" if messages else "false"})
    assert status == 200, body
    assert isinstance(body, dict)
    return body


def an_online_plug(sim: ServiceProcess) -> tuple[str, dict[str, Any]]:
    devices = truth(sim)["fleet"]["devices"]
    return next(
        (d, t)
        for d, t in sorted(devices.items())
        if t["bound"] and t["online"] and t["product_id"] == "sim0plug0cz00001"
    )
