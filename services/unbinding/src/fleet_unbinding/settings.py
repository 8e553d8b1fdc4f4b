"""unbinding's configuration: the common `FLEET_` settings, API security, a domain service's
(`FLEET_UNBINDING_DATABASE`, `_API_KEYS`: see `fleet_shared.service.domain`; the API keys' names are the
operator accounts they act as: Tuya's developer / partner / space member account), quotas, QR sessions,
approval, Tuya call pacing and the background loops (relay, resume, QR polling)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from fleet_shared.service.domain import DomainSettings


class UnbindingSettings(DomainSettings):
    service: ClassVar[str] = "unbinding"
    # daily quotas (Tuya's defaults); days are UTC days shifted by this many minutes (0: UTC)
    unbinding_account_daily_limit: int = Field(100, ge=0)
    unbinding_product_daily_limit: int = Field(100, ge=0)
    unbinding_quota_day_utc_offset_minutes: int = Field(0, ge=-14 * 60, le=14 * 60)
    # QR sessions: validity (never beyond the pairing token's own), and how often scans are polled
    unbinding_qr_validity_s: float = Field(300.0, gt=0, le=1800)
    unbinding_qr_poll_interval_s: float = Field(2.0, gt=0)
    unbinding_qr_time_zone_id: str = "Etc/UTC"
    # pairing failure codes that mean "still bound" (Tuya's guide: 113), comma separated
    unbinding_already_bound_codes: str = "113"
    # a worker reconciles another worker's removal intent only after this long (longer than any call)
    unbinding_call_lease_s: float = Field(30.0, gt=0)
    # batches with more devices than this wait for a second administrator's approval
    unbinding_approval_threshold: int = Field(100, ge=0, le=1000)
    # devices of list and wired batches in progress at once in this process (all batches together; a QR
    # session's devices do not wait for them), and Tuya removal calls per device before giving up
    unbinding_device_concurrency: int = Field(8, ge=1, le=256)
    unbinding_max_calls_per_device: int = Field(3, ge=1, le=20)
    unbinding_outbox_relay_interval_s: float = Field(1.0, gt=0)
    # running batches left by a crash (or devices left for later: Tuya unreachable) are resumed this often
    unbinding_resume_interval_s: float = Field(5.0, gt=0)
    # Tuya API pacing of this process (requests/s per API): removals (unbind and reset share one schedule;
    # at most `burst` at once: rate + burst <= Tuya's per-second limit keeps every second under it) and
    # device lookups
    unbinding_tuya_removal_rate_per_s: float = Field(10.0, gt=0)
    unbinding_tuya_removal_burst: float = Field(1.5, ge=1, le=10)
    unbinding_tuya_lookup_rate_per_s: float = Field(20.0, gt=0)
    # removal calls under way at once at most (0: no cap); >= removal rate x round trip to Tuya + 1
    unbinding_tuya_removals_in_flight: int = Field(0, ge=0, le=256)
    # quota units reserved per counter write (the unused ones go back when the block closes)
    unbinding_quota_block_size: int = Field(32, ge=1, le=1000)
    # authorization and limit lookups are cached this long per process (another replica's change applies
    # within it; this process's own changes at once)
    unbinding_cache_ttl_s: float = Field(5.0, ge=0, le=300)

    def already_bound_codes(self) -> frozenset[str]:
        return frozenset(c.strip() for c in self.unbinding_already_bound_codes.split(",") if c.strip())
