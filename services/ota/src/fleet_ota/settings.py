"""ota's configuration: the common `FLEET_` settings, a domain service's (`FLEET_OTA_DATABASE`, `_API_KEYS`,
its device-topic subscription: see `fleet_shared.service.domain`) plus its own `FLEET_OTA_...` settings."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from fleet_shared.service.domain import DeviceConsumerSettings


class OtaSettings(DeviceConsumerSettings):
    service: ClassVar[str] = "ota"
    # a device's earlier progress matters only for upgrades ota commanded, after it subscribed
    initial_position: Literal["latest"] = "latest"
    # background loops: how often each runs, and how many documents one round handles
    ota_tick_s: float = Field(1.0, gt=0, le=60)
    ota_loop_batch: int = Field(200, ge=1, le=10_000)
    # the shared client's own pacing of each Tuya API (calls per second, per API): above the regions' dispatch
    # rates, so Tuya's limit (a 1199 answer gives the attempt back) and the regions' rates are what bind
    ota_tuya_rate_per_s: float = Field(100.0, gt=0)
    # Tuya's limit on the upgrade API (commands a second), the project's for every region and release: ota
    # paces all of its commands together a little under it, across replicas (handlers.ProjectPace); 0: no
    # project pace (each region's rate only, slowed while Tuya refuses)
    ota_tuya_upgrade_per_s: float = Field(10.0, ge=0)
    # the most commands one region sends in one tick, whatever its rate (a catch-up after a pause is spread)
    ota_dispatch_burst: int = Field(50, ge=1, le=10_000)
    # per-device upgrade: attempts before failing for good, backoff between them, our own timeout per attempt
    ota_max_attempts: int = Field(3, ge=1, le=20)
    ota_retry_backoff_s: float = Field(300.0, gt=0)
    ota_retry_backoff_max_s: float = Field(3600.0, gt=0)
    ota_attempt_timeout_s: float = Field(1800.0, gt=0)
    # a commanded attempt with no news for this long is reconciled from Tuya's progress API (nothing under
    # way there: given back), and planned devices claimed this long ago without an upgrade document are
    # created again (crash recovery). A command is sent within a quarter of it or never, and its call is
    # abandoned a quarter later; the other half covers Tuya's lag and clock skew (handlers.recover_commanded)
    ota_command_grace_s: float = Field(120.0, gt=0)
    # an upgrade under way this long without Tuya's "done" is polled from the progress API (oldest first)
    ota_poll_after_s: float = Field(300.0, gt=0)
    # the outbox relay: documents per pass and idle wait between passes
    ota_relay_batch: int = Field(500, ge=1, le=10_000)
    ota_relay_idle_s: float = Field(0.5, gt=0)
