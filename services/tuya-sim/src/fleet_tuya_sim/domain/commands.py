"""Device commands (`POST .../devices/{id}/commands`): the cloud sends DP values to a device, the device
applies them and reports its new status, as a real device answers a command with a status report (protocol 4).

Rules, as Tuya's cloud answers them:
- the device must be bound to an owner (2010 otherwise) and online (2001 "device is offline");
- every command names a writable DP of the product (a function) with a value its schema accepts; one bad
  command refuses the whole batch (2008 "command or value not support") and nothing changes;
- an empty command list is a missing parameter (1100).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fleet_tuya_sim.domain import errors
from fleet_tuya_sim.domain.device import DpState, LogEntry, LogType
from fleet_tuya_sim.domain.errors import CloudRefusal
from fleet_tuya_sim.domain.events import DpReading, DpReported, Event
from fleet_tuya_sim.domain.fleet import Fleet
from fleet_tuya_sim.domain.products import DpSchema, DpValue

PARAM_EMPTY = 1100
FROM_CLOUD = "2"  # `event_from` of a log entry the cloud caused


@dataclass(frozen=True)
class Command:
    code: str
    value: object


def parse_commands(body: object) -> list[Command]:
    """`{"commands": [{"code": ..., "value": ...}]}` -> commands; a malformed body is refused (1109/1100)."""
    if not isinstance(body, dict) or not isinstance(body.get("commands"), list):
        raise CloudRefusal(errors.PARAM_ILLEGAL, "param illegal: commands must be a list")
    commands: list[Command] = []
    for item in body["commands"]:
        if not isinstance(item, dict) or not isinstance(item.get("code"), str) or "value" not in item:
            raise CloudRefusal(errors.PARAM_ILLEGAL, "param illegal: each command has a code and a value")
        commands.append(Command(item["code"], item["value"]))
    if not commands:
        raise CloudRefusal(PARAM_EMPTY, "param is empty: commands")
    return commands


def apply_commands(fleet: Fleet, device_id: str, commands: Sequence[Command], now_ms: int) -> list[Event]:
    """Applies every command or none; returns the device's status report of the new values."""
    device = fleet.device(device_id)
    if not device.online:
        raise CloudRefusal(errors.DEVICE_OFFLINE, "device is offline")
    product = fleet.product_of(device)
    writable = {dp.code: dp for dp in product.dps if dp.mode == "rw"}
    checked: list[tuple[DpSchema, DpValue]] = []
    for command in commands:
        dp = writable.get(command.code)
        if dp is None or not dp.accepts(command.value):
            raise CloudRefusal(errors.NOT_SUPPORTED, "command or value not support")
        checked.append((dp, _dp_value(command.value)))
    t = device.tick(now_ms)
    readings = []
    for dp, value in sorted(checked, key=lambda pair: pair[0].dp_id):
        device.log(LogEntry(LogType.COMMAND, now_ms, dp.code, _log_value(value), FROM_CLOUD))
        device.dps[dp.code] = DpState(value, t)
        device.log(LogEntry(LogType.DP_REPORT, t, dp.code, _log_value(value)))
        readings.append(DpReading(dp.dp_id, dp.code, value, t))
    device.update_time = now_ms // 1000
    data_id = str(uuid.UUID(int=fleet.rng.getrandbits(128), version=4))
    return [DpReported(device.device_id, device.product_id, t, data_id, tuple(readings))]


def _dp_value(value: Any) -> DpValue:
    # `accepts` has checked the type: bool, int or str
    assert isinstance(value, bool | int | str)
    return value


def _log_value(value: DpValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
