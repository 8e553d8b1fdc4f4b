"""What can go wrong with OTA in the simulated cloud, and the count of upgrade commands (ground truth).

- Outcome rates per region and product (`*` matches any): failure (Tuya 4), timeout (Tuya 7), and "done but
  old version" (Tuya says 3, the device keeps running the old firmware). The most specific rule wins:
  region+product, then region, then product, then `*`; no rule: the fleet's global ratios.
- Tuya's rate limit on the upgrade API (`POST /v2.0/cloud/thing/{id}/firmware/{channel}`), on top of the
  project's request limit: over it, the call is refused with 1199 and nothing starts.
- Every upgrade command is counted per device: accepted (an upgrade started) or refused with its code. A
  client that never commands one attempt twice has, per device, as many accepted commands as attempts Tuya
  accepted.
- The times of the last commands the rate limit let through and of its refusals are kept (`rate_truth`): how
  close a client came to the limit, and whether any second went over it.
"""

from __future__ import annotations

import itertools
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from fleet_tuya_sim.domain.errors import CloudRefusal
from fleet_tuya_sim.domain.ota import OtaOutcome
from fleet_tuya_sim.domain.project import TOO_FREQUENT, TokenBucket

ANY = "*"


_KEPT = 100_000  # command times kept for `rate_truth` (a long-running simulator keeps only the last ones)


def _most_within(times: list[int], window_ms: int) -> int:
    """The most of the sorted `times` within any `window_ms`."""
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= window_ms:
            start += 1
        best = max(best, end - start + 1)
    return best


def _excess(gaps: list[int], rate: float) -> dict[str, float] | None:
    """Time lost between passed commands beyond the limit's gap (ms), by how long the gap was: where a client
    under the limit loses its rate (many slightly long gaps, or a few long pauses)."""
    if rate <= 0:
        return None
    gap = 1000 / rate
    lost = [g - gap for g in gaps if g > gap]
    return {
        "total": round(sum(lost), 1),
        "in_gaps_up_to_2x": round(sum(x for x in lost if x <= gap), 1),
        "in_longer_gaps": round(sum(x for x in lost if x > gap), 1),
    }


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
    # when commands passed the upgrade API's limit and when it refused them (ms; the last ones only)
    passed_ms: deque[int] = field(default_factory=lambda: deque(maxlen=_KEPT))
    limited_ms: deque[int] = field(default_factory=lambda: deque(maxlen=_KEPT))
    early_ms: deque[int] = field(default_factory=lambda: deque(maxlen=_KEPT))

    def rates_for(self, region: str, product_id: str) -> FaultRates | None:
        for key in ((region, product_id), (region, ANY), (ANY, product_id), (ANY, ANY)):
            if key in self.rates:
                return self.rates[key]
        return None

    def limit_upgrades(self, per_second: float, burst: float) -> None:
        """A new limit; the times kept for `rate_truth` start again with it."""
        self.upgrade_limit = TokenBucket(per_second, max(burst, 1.0))
        self.passed_ms.clear()
        self.limited_ms.clear()
        self.early_ms.clear()

    def admit(self, device_id: str, now_ms: int) -> None:
        """Tuya's rate limit on the upgrade API: refused with 1199 when over it (and counted)."""
        if not self.upgrade_limit.take(now_ms):
            self.limited_ms.append(now_ms)
            # how early it came: the time until the limit would have let it through
            limit = self.upgrade_limit
            self.early_ms.append(round(1000 * (1 - limit.tokens) / limit.rate) if limit.rate > 0 else 0)
            self.refused(device_id, TOO_FREQUENT)
            raise CloudRefusal(TOO_FREQUENT, "requests too frequently")
        self.passed_ms.append(now_ms)

    def rate_truth(self) -> dict[str, Any]:
        """The upgrade API's commands as its limit saw them: how many passed from the first to the last and at
        what rate over that span, the most in any second (sliding: never above the limit), the commands and
        1199 refusals per second from the first, and the gaps between consecutive passed commands."""
        times, refused = list(self.passed_ms), list(self.limited_ms)
        out: dict[str, Any] = {
            "limit_per_s": self.upgrade_limit.rate,
            "burst": self.upgrade_limit.burst,
            "passed": len(times),
            "refused_1199": len(refused),
            # how early each refused command came (ms before the limit would have let it through), sorted:
            # a few ms is jitter in transit, a gap's worth is a client over the limit
            "refused_early_ms": sorted(self.early_ms),
        }
        if not times:
            return out
        first, last = times[0], times[-1]
        span_s = (last - first) / 1000
        gaps = sorted(b - a for a, b in itertools.pairwise(times))
        seconds = (max([last, *refused]) - first) // 1000 + 1
        per_second, refused_per_second = [0] * seconds, [0] * seconds
        for t in times:
            per_second[(t - first) // 1000] += 1
        for t in refused:
            if t >= first:
                refused_per_second[(t - first) // 1000] += 1
        return {
            **out,
            "first_ms": first,
            "last_ms": last,
            # n commands a gap apart span n - 1 gaps
            "per_s_first_to_last": round((len(times) - 1) / span_s, 3) if span_s > 0 else None,
            "max_in_any_second": _most_within(times, 1000),
            "per_second": per_second,
            "refused_per_second": refused_per_second,
            "gap_ms": {
                "min": gaps[0] if gaps else None,
                "p50": gaps[len(gaps) // 2] if gaps else None,
                "p90": gaps[int(len(gaps) * 0.9)] if gaps else None,
                "max": gaps[-1] if gaps else None,
                "lost_ms": _excess(gaps, self.upgrade_limit.rate),
            },
        }

    def accepted(self, device_id: str) -> None:
        self.commands.setdefault(device_id, CommandTally()).accepted += 1

    def refused(self, device_id: str, code: int) -> None:
        tally = self.commands.setdefault(device_id, CommandTally())
        tally.refused[code] = tally.refused.get(code, 0) + 1
