"""What can go wrong with OTA in the simulated cloud, and the count of upgrade commands (ground truth).

- Outcome rates per region and product (`*` matches any): failure (Tuya 4), timeout (Tuya 7), and "done but
  old version" (Tuya says 3, the device keeps running the old firmware). The most specific rule wins:
  region+product, then region, then product, then `*`; no rule: the fleet's global ratios.
- Tuya's rate limit on the upgrade API (`POST /v2.0/cloud/thing/{id}/firmware/{channel}`), on top of the
  project's request limit: over it, the call is refused with 1199 and nothing starts.
- Every upgrade command is counted per device: accepted (an upgrade started) or refused with its code. A
  client that never commands one attempt twice has, per device, as many accepted commands as attempts Tuya
  accepted.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from fleet_tuya_sim.domain.errors import CloudRefusal
from fleet_tuya_sim.domain.ota import OtaOutcome
from fleet_tuya_sim.domain.project import TOO_FREQUENT, TokenBucket

ANY = "*"


@dataclass(frozen=True)
class FaultRates:
    failure: float = 0.0
    timeout: float = 0.0
    done_old_version: float = 0.0

    def draw(self, rng: random.Random) -> OtaOutcome:
        x = rng.random()
        for outcome, rate in (
            (OtaOutcome.FAILURE, self.failure),
            (OtaOutcome.TIMEOUT, self.timeout),
            (OtaOutcome.DONE_OLD_VERSION, self.done_old_version),
        ):
            if x < rate:
                return outcome
            x -= rate
        return OtaOutcome.SUCCESS


@dataclass
class CommandTally:
    accepted: int = 0
    refused: dict[int, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {"accepted": self.accepted, "refused": {str(k): v for k, v in sorted(self.refused.items())}}


@dataclass
class OtaFaults:
    rates: dict[tuple[str, str], FaultRates] = field(default_factory=dict)  # (region, product) -> rates
    upgrade_limit: TokenBucket = field(default_factory=lambda: TokenBucket(0.0, 1.0))
    commands: dict[str, CommandTally] = field(default_factory=dict)

    def rates_for(self, region: str, product_id: str) -> FaultRates | None:
        for key in ((region, product_id), (region, ANY), (ANY, product_id), (ANY, ANY)):
            if key in self.rates:
                return self.rates[key]
        return None

    def limit_upgrades(self, per_second: float, burst: float) -> None:
        self.upgrade_limit = TokenBucket(per_second, max(burst, 1.0))

    def admit(self, device_id: str, now_ms: int) -> None:
        """Tuya's rate limit on the upgrade API: refused with 1199 when over it (and counted)."""
        if not self.upgrade_limit.take(now_ms):
            self.refused(device_id, TOO_FREQUENT)
            raise CloudRefusal(TOO_FREQUENT, "requests too frequently")

    def accepted(self, device_id: str) -> None:
        self.commands.setdefault(device_id, CommandTally()).accepted += 1

    def refused(self, device_id: str, code: int) -> None:
        tally = self.commands.setdefault(device_id, CommandTally())
        tally.refused[code] = tally.refused.get(code, 0) + 1
