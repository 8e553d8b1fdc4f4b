"""The removal desk: what the simulated cloud does around device removal (unbind / unbind + reset), so every
path of a batch-unbinding client can be driven and checked.

- A per-API rate limit on the removal APIs (requests/s with a burst, beside the project-wide one): a removal
  over it is refused 1199 and does nothing.
- Faults at configurable rates, drawn from the fleet's seeded generator: device offline (2001), rate limited
  (1199 or 1110, "did not run"), device not found (2010); or planned per device (the next removals of this
  device answer these codes, in order). A refused removal does nothing.
- Ground truth: removals that took effect, counted per device with their times (a device unbound twice, or
  removals faster than the configured rate, are visible to tests), and refusals per code.
- LAN discovery for wired devices: devices attached to a gateway are what a LAN scan through it finds.

Pure: time passed in, randomness from the generator given.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from fleet_tuya_sim.domain import errors
from fleet_tuya_sim.domain.errors import CloudRefusal
from fleet_tuya_sim.domain.project import TOO_FREQUENT, TokenBucket

CONCURRENCY_OVER_LIMIT = 1110
_MESSAGES = {
    errors.DEVICE_OFFLINE: "device is offline",
    TOO_FREQUENT: "requests too frequently",
    CONCURRENCY_OVER_LIMIT: "concurrent request over limit",
    errors.DEVICE_NOT_EXIST: "device not exist",
}


@dataclass
class RemovalFaults:
    offline_ratio: float = 0.0
    rate_limited_ratio: float = 0.0  # half 1199, half 1110
    not_found_ratio: float = 0.0

    def draw(self, rng: random.Random) -> int | None:
        x = rng.random()
        for code, ratio in (
            (errors.DEVICE_OFFLINE, self.offline_ratio),
            (TOO_FREQUENT if rng.random() < 0.5 else CONCURRENCY_OVER_LIMIT, self.rate_limited_ratio),
            (errors.DEVICE_NOT_EXIST, self.not_found_ratio),
        ):
            if x < ratio:
                return code
            x -= ratio
        return None


@dataclass
class RemovalDesk:
    rate_per_s: float = 0.0  # 0: only the project-wide limit applies
    burst: float = 1.0
    faults: RemovalFaults = field(default_factory=RemovalFaults)
    planned: dict[str, list[int]] = field(default_factory=dict)
    removals: dict[str, list[int]] = field(default_factory=dict)  # device -> times (ms) it was removed
    refusals: Counter[int] = field(default_factory=Counter)
    refused_at: list[int] = field(default_factory=list)  # times (ms) of refusals for the rate limit (1199)
    gateways: dict[str, list[str]] = field(default_factory=dict)  # gateway -> wired devices behind it
    # its own generator: drawing faults never shifts the fleet's seeded sequence
    rng: random.Random = field(default_factory=lambda: random.Random("removals"))
    _bucket: TokenBucket | None = None

    def configure(self, *, rate_per_s: float, burst: float, faults: RemovalFaults, seed: int = 1) -> None:
        self.rate_per_s, self.burst, self.faults = rate_per_s, max(1.0, burst), faults
        self._bucket = TokenBucket(rate_per_s, self.burst) if rate_per_s > 0 else None
        self.rng = random.Random(f"{seed}:removals")

    def plan(self, device_id: str, codes: list[int]) -> None:
        self.planned[device_id] = list(codes)

    def admit(self, device_id: str, now_ms: int) -> None:
        """Before a removal runs: refuse it (CloudRefusal, nothing done) or let it through."""
        code: int | None = None
        if self._bucket is not None and not self._bucket.take(now_ms):
            code = TOO_FREQUENT
            self.refused_at.append(now_ms)
        elif self.planned.get(device_id):
            code = self.planned[device_id].pop(0)
        else:
            code = self.faults.draw(self.rng)
        if code is not None:
            self.refusals[code] += 1
            raise CloudRefusal(code, _MESSAGES.get(code, "refused"))

    def removed(self, device_id: str, now_ms: int) -> None:
        self.removals.setdefault(device_id, []).append(now_ms)

    def attach(self, gateway_id: str, device_ids: list[str]) -> None:
        self.gateways.setdefault(gateway_id, [])
        self.gateways[gateway_id] += [d for d in device_ids if d not in self.gateways[gateway_id]]

    def lan_scan(self, gateway_id: str) -> list[str]:
        return list(self.gateways.get(gateway_id, []))

    def max_rate(self, window_ms: int = 1000) -> float:
        """The most removals that took effect within any `window_ms` (per second), for rate checks."""
        times = sorted(t for ts in self.removals.values() for t in ts)
        best, start = 0, 0
        for end, t in enumerate(times):
            while t - times[start] >= window_ms:
                start += 1
            best = max(best, end - start + 1)
        return best * 1000 / window_ms

    def timeline(self, window_ms: int = 1000) -> dict[str, Any]:
        """Removals that took effect and refusals for the rate limit per `window_ms`, from the first removal
        (where a run lost its rate: evenly, at its start or end, or in bursts of refusals)."""
        times = sorted(t for ts in self.removals.values() for t in ts)
        if not times:
            return {"window_ms": window_ms, "start_ms": None, "removed": [], "refused": []}
        start = times[0]
        slots = (max([times[-1], *self.refused_at]) - start) // window_ms + 1
        removed, refused = [0] * slots, [0] * slots
        for t in times:
            removed[(t - start) // window_ms] += 1
        for t in self.refused_at:
            if t >= start:
                refused[(t - start) // window_ms] += 1
        return {"window_ms": window_ms, "start_ms": start, "removed": removed, "refused": refused}

    def truth(self) -> dict[str, Any]:
        return {
            "removals": {d: len(ts) for d, ts in self.removals.items()},
            "removed_twice": sorted(d for d, ts in self.removals.items() if len(ts) > 1),
            "total": sum(len(ts) for ts in self.removals.values()),
            "refusals": {str(c): n for c, n in self.refusals.items()},
            "rate_per_s": self.rate_per_s,
            "first_ms": min((t for ts in self.removals.values() for t in ts), default=None),
            "last_ms": max((t for ts in self.removals.values() for t in ts), default=None),
        }

    def reset(self) -> None:
        self.removals.clear()
        self.refusals.clear()
        self.refused_at.clear()
        self.planned.clear()
