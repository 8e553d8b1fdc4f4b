"""unbinding's configuration: the common `FLEET_` settings plus quotas, QR sessions, approval and workers."""

from __future__ import annotations

from pydantic import Field

from fleet_shared.service import ServiceSettings


class UnbindingSettings(ServiceSettings):
    unbinding_database: str = "unbinding"
    unbinding_subscription: str = "unbinding"
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
    # devices of one batch processed at once, and Tuya removal calls per device before giving up
    unbinding_device_concurrency: int = Field(8, ge=1, le=256)
    unbinding_max_calls_per_device: int = Field(3, ge=1, le=20)
    unbinding_outbox_relay_interval_s: float = Field(1.0, gt=0)
