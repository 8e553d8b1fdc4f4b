"""The process's clock and session ids, and the product binding modes from configuration."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime

from fleet_pairing.domain.session import BindingMode


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class UuidSessionIds:
    def new_session_id(self) -> str:
        return f"ps_{uuid.uuid4().hex}"


class ConfiguredBindingModes:
    """Binding mode per product id, from configuration (`pid:mode,pid:mode`), with a default for the rest."""

    def __init__(self, modes: Mapping[str, BindingMode], default: BindingMode | None = None) -> None:
        self.modes = dict(modes)
        self.default = default

    @classmethod
    def parse(cls, text: str, default: str | None = None) -> ConfiguredBindingModes:
        """`"pid1:strong, pid2:medium"`; raises ValueError naming the bad entry."""
        modes: dict[str, BindingMode] = {}
        for raw in text.split(","):
            entry = raw.strip()
            if not entry:
                continue
            pid, sep, mode = entry.partition(":")
            if not sep or not pid.strip():
                raise ValueError(f"binding mode entry {entry!r}: expected `pid:mode`")
            try:
                modes[pid.strip()] = BindingMode(mode.strip().lower())
            except ValueError:
                raise ValueError(
                    f"binding mode entry {entry!r}: mode must be strong, medium or weak"
                ) from None
        return cls(modes, BindingMode(default.lower()) if default else None)

    def binding_mode(self, product_id: str | None) -> BindingMode | None:
        if product_id is None:
            return self.default
        return self.modes.get(product_id, self.default)
