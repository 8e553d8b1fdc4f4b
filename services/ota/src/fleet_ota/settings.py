"""ota's configuration: the common `FLEET_` settings plus its own `FLEET_OTA_...` settings."""

from __future__ import annotations

from pydantic import Field

from fleet_shared.service import ServiceSettings


class OtaSettings(ServiceSettings):
    ota_database: str = "ota"
    ota_subscription: str = "ota"
    # per-device upgrade: attempts before failing for good, backoff between them, our own timeout per attempt
    ota_max_attempts: int = Field(3, ge=1, le=20)
    ota_retry_backoff_s: float = Field(300.0, gt=0)
    ota_retry_backoff_max_s: float = Field(3600.0, gt=0)
    ota_attempt_timeout_s: float = Field(1800.0, gt=0)
    # a commanded attempt with no news for this long is reconciled from Tuya's progress API (crash recovery)
    ota_command_grace_s: float = Field(120.0, gt=0)
    # the outbox relay: documents per pass and idle wait between passes
    ota_relay_batch: int = Field(500, ge=1, le=10_000)
    ota_relay_idle_s: float = Field(0.5, gt=0)
    # planning: devices inserted per bulk write
    ota_plan_chunk: int = Field(5000, ge=100, le=100_000)
