"""Commands sent through the OpenAPI: applied to the virtual device, whose status report is published."""

from __future__ import annotations

from fleet_tuya_sim.domain.commands import apply_commands, parse_commands
from fleet_tuya_sim.service_layer.simulator import Simulator


def send_commands(sim: Simulator, device_id: str, body: object) -> list[str]:
    """Validates and applies the commands (all or none); returns the tids of the status push it caused."""
    commands = parse_commands(body)
    return sim.emit(apply_commands(sim.fleet, device_id, commands, sim.now_ms()))
