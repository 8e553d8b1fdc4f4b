"""A product's DP schema and the typing of reported values by it (REFERENCE §6).

Integer values are scaled (`raw / 10^scale`), enum values must be in the range, bitmap/fault values are
decoded to one flag per label. A value that does not fit its DP's type is refused (a bad input changes
nothing). DPs the schema does not know, or all DPs of a product whose schema could not be fetched, are kept
untyped, as reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from fleet_contracts.tuya import DpType


@dataclass(frozen=True, slots=True)
class DpDefinition:
    """One DP of a product: its code, id, type and the type's parameters."""

    code: str
    dp_id: int | None = None
    type: DpType | None = None
    scale: int = 0
    min: int | None = None
    max: int | None = None
    unit: str | None = None
    range: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    maxlen: int | None = None


@dataclass(frozen=True, slots=True)
class DpSchema:
    """The DPs of one product, by code."""

    product_id: str
    dps: dict[str, DpDefinition] = field(default_factory=dict)

    def get(self, code: str) -> DpDefinition | None:
        return self.dps.get(code)

    def code_of(self, dp_id: int) -> str | None:
        for definition in self.dps.values():
            if definition.dp_id == dp_id:
                return definition.code
        return None


EMPTY_SCHEMA = DpSchema(product_id="")


class InvalidDpValue(ValueError):
    """A reported value does not fit its DP's type."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"DP {code!r}: {reason}")
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class TypedValue:
    """A value as the shadow keeps it: typed (scaled, decoded) and the raw value as reported."""

    value: Any
    raw: Any
    type: DpType | None = None
    flags: dict[str, bool] | None = None


def _is_int(raw: Any) -> bool:
    return isinstance(raw, int) and not isinstance(raw, bool)


def type_value(definition: DpDefinition | None, raw: Any) -> TypedValue:
    """Type `raw` by its DP definition; raises `InvalidDpValue` when it does not fit."""
    if definition is None or definition.type is None:
        return TypedValue(value=raw, raw=raw)
    code = definition.code
    match definition.type:
        case DpType.BOOLEAN:
            if not isinstance(raw, bool):
                raise InvalidDpValue(code, f"expected a boolean, got {raw!r}")
            return TypedValue(raw, raw, DpType.BOOLEAN)
        case DpType.INTEGER:
            if isinstance(raw, float) and raw.is_integer():
                raw = int(raw)
            if not _is_int(raw):
                raise InvalidDpValue(code, f"expected an integer, got {raw!r}")
            value: Any = raw if definition.scale <= 0 else round(raw / 10**definition.scale, definition.scale)
            return TypedValue(value, raw, DpType.INTEGER)
        case DpType.ENUM:
            if not isinstance(raw, str):
                raise InvalidDpValue(code, f"expected an enum string, got {raw!r}")
            if definition.range and raw not in definition.range:
                raise InvalidDpValue(code, f"{raw!r} is not one of {list(definition.range)}")
            return TypedValue(raw, raw, DpType.ENUM)
        case DpType.BITMAP:
            if not _is_int(raw) or raw < 0:
                raise InvalidDpValue(code, f"expected a non-negative bitmap integer, got {raw!r}")
            flags = {label: bool(raw >> bit & 1) for bit, label in enumerate(definition.labels)}
            # Bits beyond the labels are kept too: a fault the schema does not name is still a fault.
            extra, bit = raw >> len(definition.labels), len(definition.labels)
            while extra:
                if extra & 1:
                    flags[f"bit{bit}"] = True
                extra, bit = extra >> 1, bit + 1
            active = [name for name, on in flags.items() if on]
            return TypedValue(active, raw, DpType.BITMAP, flags)
        case DpType.STRING | DpType.RAW:
            if not isinstance(raw, str):
                raise InvalidDpValue(code, f"expected a string, got {raw!r}")
            if definition.maxlen is not None and definition.maxlen > 0 and len(raw) > definition.maxlen:
                raise InvalidDpValue(code, f"longer than {definition.maxlen} characters")
            return TypedValue(raw, raw, definition.type)
        case DpType.JSON:
            if isinstance(raw, str):
                try:
                    return TypedValue(orjson.loads(raw), raw, DpType.JSON)
                except orjson.JSONDecodeError as e:
                    raise InvalidDpValue(code, "not valid JSON") from e
            return TypedValue(raw, raw, DpType.JSON)
    raise AssertionError(definition.type)  # pragma: no cover - the match is exhaustive
