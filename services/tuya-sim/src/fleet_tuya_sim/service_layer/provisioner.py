"""Devices in pairing mode, driven over time: they activate with a token after a delay, fail with a chosen
Tuya code, or are provisioned like a custom provisioner or a camera does it (SSID, password and token; then
they join the site's Wi-Fi and activate). Each activation runs the fleet's rules at the moment it happens,
so a delay past the token's expiry fails as Tuya would, and the token result is the ground truth.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from fleet_tuya_sim.domain.fleet import ActivationOutcome
from fleet_tuya_sim.domain.provisioning import Credentials, Site
from fleet_tuya_sim.service_layer.simulator import Simulator

_log = logging.getLogger(__name__)


@dataclass
class Provisioner:
    sim: Simulator
    site: Site = field(default_factory=Site)
    outcomes: list[ActivationOutcome] = field(default_factory=list)  # of the delayed steps, in order
    _pending: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _later(self, delay_s: float, step: str, *args: object) -> None:
        async def run() -> None:
            await asyncio.sleep(delay_s)
            try:
                self.outcomes += getattr(self, step)(*args)
            except Exception as e:  # a refusal (token none of ours, unknown device): logged, not raised
                _log.warning("delayed pairing step failed: %s", type(e).__name__)

        task = asyncio.create_task(run(), name="tuya-sim-pairing-step")
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def activate(self, device_ids: Sequence[str], token: str, delay_s: float = 0) -> list[ActivationOutcome]:
        """Activate now (the outcomes), or after `delay_s` (nothing yet; see `outcomes`)."""
        self.sim.fleet.token_of(token)  # a token none of ours is refused now, not in the background
        if delay_s > 0:
            self._later(delay_s, "_activate_now", list(device_ids), token)
            return []
        return self._activate_now(device_ids, token)

    def _activate_now(self, device_ids: Sequence[str], token: str) -> list[ActivationOutcome]:
        return self.sim.activate(device_ids, token)

    def fail(
        self, device_ids: Sequence[str], token: str, code: str, msg: str, delay_s: float = 0
    ) -> list[ActivationOutcome]:
        """The devices fail to pair with Tuya's `code` (now, or after `delay_s`)."""
        self.sim.fleet.token_of(token)
        if delay_s > 0:
            self._later(delay_s, "_fail_now", list(device_ids), token, code, msg)
            return []
        return self._fail_now(device_ids, token, code, msg)

    def _fail_now(
        self, device_ids: Sequence[str], token: str, code: str, msg: str
    ) -> list[ActivationOutcome]:
        return [self.sim.fleet.fail_pairing(d, token, code, msg) for d in device_ids]

    def provision(
        self, device_ids: Sequence[str], credentials: Credentials, delay_s: float = 0
    ) -> list[ActivationOutcome]:
        """A provisioner hands the devices SSID, password and token: they join the Wi-Fi, then activate."""
        self.sim.fleet.token_of(credentials.token)
        if delay_s > 0:
            self._later(delay_s, "_provision_now", list(device_ids), credentials)
            return []
        return self._provision_now(device_ids, credentials)

    def _provision_now(self, device_ids: Sequence[str], credentials: Credentials) -> list[ActivationOutcome]:
        refused = self.site.join(credentials.ssid, credentials.password)
        if refused is not None:
            return self._fail_now(device_ids, credentials.token, *refused)
        return self._activate_now(device_ids, credentials.token)
