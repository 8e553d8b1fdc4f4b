"""Homes, owners and virtual devices: the state the simulated cloud holds about each device."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import IntEnum

from fleet_tuya_sim.domain.binding import BindingMode
from fleet_tuya_sim.domain.products import DpValue

MAX_LOGS_PER_DEVICE = 2000


class LogType(IntEnum):
    """`type` of `GET /v1.0/devices/{id}/logs` (REFERENCE §6)."""

    ONLINE = 1
    OFFLINE = 2
    ACTIVATION = 3
    RESET = 4
    COMMAND = 5
    FIRMWARE = 6
    DP_REPORT = 7


@dataclass(frozen=True)
class Home:
    home_id: str  # what the device APIs call `owner_id`
    name: str
    owner_uid: str
    region: str  # data-centre code (eu, us, cn, in)
    time_zone: str = "+01:00"


@dataclass(frozen=True)
class LogEntry:
    event_id: int  # LogType
    event_time: int  # ms
    code: str = ""
    value: str = ""
    event_from: str = "1"  # 1 device, 2 cloud


@dataclass
class DpState:
    value: DpValue
    t: int  # device timestamp of the last report, ms


@dataclass
class Device:
    device_id: str
    uuid: str
    product_id: str
    name: str
    local_key: str = field(repr=False)  # a device secret: never logged
    region: str
    binding_mode: BindingMode
    low_power: bool
    create_time: int  # s
    ip: str = ""
    time_zone: str = "+01:00"
    uid: str | None = None
    home_id: str | None = None
    active_time: int = 0  # s
    update_time: int = 0  # s
    online: bool = False
    # Sleepy devices only act on an upgrade while awake (until this cloud time, ms).
    awake_until: int = 0
    dps: dict[str, DpState] = field(default_factory=dict)
    dp_names: dict[int, str] = field(default_factory=dict)
    firmware: dict[int, str] = field(default_factory=dict)
    clock: int = 0  # last device timestamp used, ms; strictly increasing per device
    logs: deque[LogEntry] = field(default_factory=lambda: deque(maxlen=MAX_LOGS_PER_DEVICE), repr=False)

    @property
    def bound(self) -> bool:
        return self.uid is not None

    def tick(self, now_ms: int) -> int:
        """The next device timestamp: the device's clock follows cloud time but never repeats or goes back."""
        self.clock = max(now_ms, self.clock + 1)
        return self.clock

    def awake(self, now_ms: int) -> bool:
        """Whether the device can act now: online, and for low-power devices, inside a wake window."""
        if not self.online:
            return False
        return not self.low_power or now_ms < self.awake_until

    def log(self, entry: LogEntry) -> None:
        self.logs.append(entry)
