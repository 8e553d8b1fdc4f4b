"""Products and their DP schemas (REFERENCE §6): what a device of a product can report and how.

A DP (data point) has a numeric id, a code and a type (fleet_contracts.tuya.DpType): bool, value (integer
with scale), enum, bitmap (fault flags), string, raw or json (a JSON document in a string).
`values_json()` renders the schema the way Tuya's specification APIs do: a JSON *string*.
"""

from __future__ import annotations

import base64
import random
from dataclasses import dataclass, field
from typing import Literal

import orjson

from fleet_contracts.tuya import CHANNEL_MCU, CHANNEL_MODULE, DpType
from fleet_tuya_sim.domain.binding import BindingMode

DpValue = bool | int | str


@dataclass(frozen=True)
class DpSchema:
    dp_id: int
    code: str
    type: DpType
    name: str = ""
    # rw: a function the cloud can send and the device reports; ro: report only.
    mode: Literal["rw", "ro"] = "rw"
    min: int = 0
    max: int = 0
    scale: int = 0
    step: int = 1
    unit: str = ""
    range: tuple[str, ...] = ()
    label: tuple[str, ...] = ()
    maxlen: int = 0
    # How often this DP changes when the device reports (relative weight); 0 = only on demand.
    volatility: float = 1.0

    def values_json(self) -> str:
        """The `values` field of the specification API: a JSON string, per type."""
        values: dict[str, object]
        match self.type:
            case DpType.INTEGER:
                values = {
                    "unit": self.unit,
                    "min": self.min,
                    "max": self.max,
                    "scale": self.scale,
                    "step": self.step,
                }
            case DpType.ENUM:
                values = {"range": list(self.range)}
            case DpType.BITMAP:
                values = {"label": list(self.label), "maxlen": len(self.label)}
            case DpType.STRING | DpType.RAW | DpType.JSON:
                values = {"maxlen": self.maxlen}
            case _:
                values = {}
        return orjson.dumps(values).decode()

    def accepts(self, value: object) -> bool:
        """True if `value` is valid for this DP (type, range, step, length)."""
        match self.type:
            case DpType.BOOLEAN:
                return isinstance(value, bool)
            case DpType.INTEGER:
                return (
                    _is_int(value)
                    and self.min <= value <= self.max  # type: ignore[operator]
                    and (value - self.min) % self.step == 0  # type: ignore[operator]
                )
            case DpType.ENUM:
                return isinstance(value, str) and value in self.range
            case DpType.BITMAP:
                return _is_int(value) and 0 <= value < (1 << len(self.label))  # type: ignore[operator]
            case DpType.STRING:
                return isinstance(value, str) and len(value) <= self.maxlen
            case DpType.RAW:
                if not isinstance(value, str):
                    return False
                try:
                    return len(base64.b64decode(value, validate=True)) <= self.maxlen
                except ValueError:
                    return False
            case DpType.JSON:
                return isinstance(value, str) and len(value) <= self.maxlen and _is_json(value)
        return False

    def initial_value(self, rng: random.Random) -> DpValue:
        match self.type:
            case DpType.BOOLEAN:
                return rng.random() < 0.5
            case DpType.INTEGER:
                return self.min + self.step * rng.randrange((self.max - self.min) // self.step + 1)
            case DpType.ENUM:
                return rng.choice(self.range)
            case DpType.BITMAP:
                return 0  # no fault
            case DpType.STRING:
                return _random_text(rng, min(self.maxlen, 12))
            case DpType.RAW:
                return _random_raw(rng, min(self.maxlen, 8))
            case DpType.JSON:
                return _random_json(rng)
        raise AssertionError(self.type)

    def default_value(self) -> DpValue:
        """The value after a factory reset."""
        match self.type:
            case DpType.BOOLEAN:
                return False
            case DpType.INTEGER:
                return self.min
            case DpType.ENUM:
                return self.range[0]
            case DpType.BITMAP:
                return 0
            case DpType.STRING | DpType.RAW:
                return ""
            case DpType.JSON:
                return "{}"
        raise AssertionError(self.type)

    def next_value(self, current: DpValue, rng: random.Random) -> DpValue:
        """A realistic next reading: switches flip, measurements drift by a few steps, faults come and go."""
        match self.type:
            case DpType.BOOLEAN:
                return not current
            case DpType.INTEGER:
                assert isinstance(current, int)
                span = max(1, (self.max - self.min) // self.step)
                # Drift of at most ~2% of the range (at least one step), never outside [min, max].
                max_steps = max(1, span // 50)
                delta = rng.randint(1, max_steps) * self.step * rng.choice((-1, 1))
                moved = current + delta
                if moved > self.max or moved < self.min:
                    moved = current - delta
                return max(self.min, min(self.max, moved))
            case DpType.ENUM:
                others = [v for v in self.range if v != current] or list(self.range)
                return rng.choice(others)
            case DpType.BITMAP:
                assert isinstance(current, int)
                return current ^ (1 << rng.randrange(len(self.label)))
            case DpType.STRING:
                return _random_text(rng, max(1, min(self.maxlen, 12)))
            case DpType.RAW:
                return _random_raw(rng, max(1, min(self.maxlen, 8)))
            case DpType.JSON:
                return _random_json(rng)
        raise AssertionError(self.type)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _random_text(rng: random.Random, length: int) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    return "".join(rng.choice(alphabet) for _ in range(length))


def _random_raw(rng: random.Random, length: int) -> str:
    # Raw DPs travel as base64 text.
    return base64.b64encode(bytes(rng.randrange(256) for _ in range(length))).decode()


def _random_json(rng: random.Random) -> str:
    # Json DPs travel as a JSON document in a string.
    return orjson.dumps({"level": rng.randrange(100)}).decode()


def _is_json(value: str) -> bool:
    try:
        orjson.loads(value)
    except orjson.JSONDecodeError:
        return False
    return True


@dataclass(frozen=True)
class Product:
    product_id: str  # PID
    name: str
    category: str
    model: str
    dps: tuple[DpSchema, ...]
    binding_mode: BindingMode = BindingMode.MEDIUM
    # Low-power (sleepy) devices: `dev_type` 1; they only act on OTA while awake.
    low_power: bool = False
    # Initial firmware per upgrade channel.
    firmware: dict[int, str] = field(default_factory=lambda: {CHANNEL_MODULE: "1.0.0"})
    icon: str = ""

    def dp(self, code: str) -> DpSchema:
        for dp in self.dps:
            if dp.code == code:
                return dp
        raise KeyError(code)

    def dp_by_id(self, dp_id: int) -> DpSchema:
        for dp in self.dps:
            if dp.dp_id == dp_id:
                return dp
        raise KeyError(dp_id)

    @property
    def reporting_dps(self) -> tuple[DpSchema, ...]:
        return tuple(dp for dp in self.dps if dp.volatility > 0)


PLUG = Product(
    product_id="sim0plug0cz00001",
    name="Smart Plug with energy metering",
    category="cz",
    model="SP-16A",
    binding_mode=BindingMode.WEAK,
    firmware={CHANNEL_MODULE: "1.2.0", CHANNEL_MCU: "1.0.3"},
    dps=(
        DpSchema(1, "switch_1", DpType.BOOLEAN, "Switch", volatility=1.0),
        DpSchema(
            9, "countdown_1", DpType.INTEGER, "Countdown", min=0, max=86400, step=1, unit="s", volatility=0.2
        ),
        DpSchema(
            18, "cur_current", DpType.INTEGER, "Current", mode="ro", max=30000, unit="mA", volatility=3.0
        ),
        DpSchema(
            19, "cur_power", DpType.INTEGER, "Power", mode="ro", max=50000, scale=1, unit="W", volatility=3.0
        ),
        DpSchema(
            20,
            "cur_voltage",
            DpType.INTEGER,
            "Voltage",
            mode="ro",
            max=5000,
            scale=1,
            unit="V",
            volatility=2.0,
        ),
        DpSchema(
            38, "relay_status", DpType.ENUM, "Power-on state", range=("off", "on", "memory"), volatility=0.1
        ),
        DpSchema(
            26,
            "fault",
            DpType.BITMAP,
            "Fault",
            mode="ro",
            label=("ov_cr", "ov_vol", "ov_pwr"),
            volatility=0.05,
        ),
    ),
)

BULB = Product(
    product_id="sim0bulb0dj00002",
    name="RGBCW Bulb",
    category="dj",
    model="A60-RGBCW",
    binding_mode=BindingMode.MEDIUM,
    firmware={CHANNEL_MODULE: "2.1.4"},
    dps=(
        DpSchema(20, "switch_led", DpType.BOOLEAN, "Switch", volatility=1.0),
        DpSchema(
            21, "work_mode", DpType.ENUM, "Mode", range=("white", "colour", "scene", "music"), volatility=0.5
        ),
        DpSchema(
            22, "bright_value_v2", DpType.INTEGER, "Brightness", min=10, max=1000, step=1, volatility=2.0
        ),
        DpSchema(23, "temp_value_v2", DpType.INTEGER, "Colour temperature", max=1000, step=1, volatility=1.0),
        DpSchema(24, "colour_data_v2", DpType.STRING, "Colour", maxlen=255, volatility=0.5),
    ),
)

SENSOR = Product(
    product_id="sim0th00wsdcg003",
    name="Temperature and Humidity Sensor",
    category="wsdcg",
    model="TH-01",
    binding_mode=BindingMode.WEAK,
    low_power=True,
    firmware={CHANNEL_MODULE: "1.0.8"},
    dps=(
        DpSchema(
            1,
            "va_temperature",
            DpType.INTEGER,
            "Temperature",
            "ro",
            min=-200,
            max=600,
            scale=1,
            unit="℃",
            volatility=3.0,
        ),
        DpSchema(2, "va_humidity", DpType.INTEGER, "Humidity", "ro", max=100, unit="%", volatility=2.0),
        DpSchema(
            3, "battery_state", DpType.ENUM, "Battery", "ro", range=("low", "middle", "high"), volatility=0.1
        ),
        DpSchema(9, "temp_unit_convert", DpType.ENUM, "Unit", range=("c", "f"), volatility=0.05),
    ),
)

CAMERA = Product(
    product_id="sim0ipc00sp00004",
    name="Indoor Camera",
    category="sp",
    model="IPC-C1",
    # IPC devices default to strong binding (REFERENCE §8).
    binding_mode=BindingMode.STRONG,
    firmware={CHANNEL_MODULE: "3.4.1", CHANNEL_MCU: "1.1.0"},
    dps=(
        DpSchema(101, "basic_indicator", DpType.BOOLEAN, "Indicator", volatility=0.2),
        DpSchema(
            106,
            "motion_sensitivity",
            DpType.ENUM,
            "Motion sensitivity",
            range=("0", "1", "2"),
            volatility=0.2,
        ),
        DpSchema(109, "sd_storge", DpType.STRING, "SD capacity", "ro", maxlen=64, volatility=0.3),
        DpSchema(115, "movement_detect_pic", DpType.RAW, "Motion picture", "ro", maxlen=128, volatility=1.0),
        DpSchema(117, "sd_status", DpType.INTEGER, "SD status", "ro", min=1, max=5, step=1, volatility=0.1),
    ),
)

CATALOG: tuple[Product, ...] = (PLUG, BULB, SENSOR, CAMERA)


def catalog_by_id(products: tuple[Product, ...] = CATALOG) -> dict[str, Product]:
    return {p.product_id: p for p in products}
