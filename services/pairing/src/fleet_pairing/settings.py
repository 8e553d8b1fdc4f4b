"""pairing's configuration: the common `FLEET_` settings, a domain service's (`FLEET_PAIRING_DATABASE`,
`_API_KEYS`, its device-topic subscription: see `fleet_shared.service.domain`) plus token lifetimes, polling
and the relay."""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar, Self

from pydantic import Field, model_validator

from fleet_shared.pulsar.device_events import DeviceSubscription
from fleet_shared.service.domain import DeviceConsumerSettings


class PairingSettings(DeviceConsumerSettings):
    service: ClassVar[str] = "pairing"
    # (a new subscription starts at `latest`: bindings before the service existed open no session)
    # device events handled at once (different devices; one device's events stay in order: KeyShared)
    pairing_max_concurrency: int = Field(32, ge=1, le=1024)
    # Tuya's guide: a token lives 10 minutes; used only when Tuya's answer carries no `expire_time`
    pairing_default_token_lifetime_s: int = Field(600, ge=30, le=3600)
    # how often active sessions ask Tuya for the token's result (`GET /v1.0/device/paring/tokens/{token}`)
    pairing_poll_interval_s: float = Field(5.0, gt=0)
    pairing_poll_batch: int = Field(100, ge=1, le=1000)
    # sessions polled at once (the client paces the calls to FLEET_PAIRING_TUYA_RATE_PER_S)
    pairing_poll_concurrency: int = Field(8, ge=1, le=256)
    # sessions whose token expired are closed by a sweep this often
    pairing_expiry_sweep_interval_s: float = Field(1.0, gt=0)
    # outbox entries left by a crash are relayed by a sweep this often
    pairing_outbox_sweep_interval_s: float = Field(2.0, gt=0)
    # the sweep leaves events younger than this to the relay of the write (this or another replica's)
    pairing_outbox_grace_s: float = Field(10.0, ge=0, le=600)
    # after expiry, pushes and the last poll of activations made in time may still arrive for this long
    pairing_settle_s: float = Field(15.0, ge=0, le=600)
    # binding mode per product (`pid:strong,pid:medium,...`) and for products not listed (empty: unknown)
    pairing_binding_modes: str = ""
    pairing_default_binding_mode: str = Field("", pattern="^(|strong|medium|weak)$")
    # how many unexpected-product removals one round attempts
    pairing_removal_batch: int = Field(100, ge=1, le=1000)
    # the most devices one multi-device EZ session may expect (the contract allows up to 1000)
    pairing_max_expected_devices: int = Field(100, ge=1, le=1000)
    # client-side pacing of each Tuya pairing API (token creation, token result, removal): Tuya limits per API
    pairing_tuya_rate_per_s: float = Field(10.0, gt=0)
    pairing_tuya_burst: float = Field(10.0, ge=1)
    pairing_shutdown_timeout_s: float = Field(15.0, gt=0)

    @property
    def device_subscription(self) -> DeviceSubscription:
        return replace(super().device_subscription, max_workers=self.pairing_max_concurrency)

    @model_validator(mode="after")
    def _settle_covers_a_poll(self) -> Self:
        # a session closes only after one more poll of Tuya's token result could have seen its last devices
        if self.pairing_settle_s < self.pairing_poll_interval_s:
            raise ValueError("FLEET_PAIRING_SETTLE_S must be at least FLEET_PAIRING_POLL_INTERVAL_S")
        return self
