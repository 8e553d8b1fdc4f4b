"""status's configuration: the common `FLEET_` settings, the security kit's (OIDC), a domain service's
(`FLEET_STATUS_DATABASE`, `_API_KEYS`, its device-topic subscription: see `fleet_shared.service.domain`), plus
the shadow writer, history and reconciliation."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from fleet_shared.service.domain import DeviceConsumerSettings


class StatusSettings(DeviceConsumerSettings):
    service: ClassVar[str] = "status"
    # a new subscription reads the whole retained topic
    initial_position: Literal["earliest", "latest"] = "earliest"
    receiver_queue_size: int = Field(2000, ge=1)
    # the shadow writer: messages are merged per device in memory and written once per device per batch
    status_batch_max_devices: int = Field(1000, ge=1, le=10_000)
    status_batch_max_delay_ms: int = Field(20, ge=0)
    # messages held unacknowledged (pending or being written) before consumption pauses: the more a device's
    # reports wait together, the fewer writes they cost. Keep it and the receiver queue below the broker's
    # maxUnackedMessagesPerConsumer (50,000 by default), which stops delivery until half of them are acked.
    status_max_pending_messages: int = Field(40_000, ge=100)
    # batches written at once (their device sets disjoint: a device is in one at a time); while they are
    # written, newly arrived facts are merged per device into the next batch
    status_flush_concurrency: int = Field(2, ge=1, le=16)
    # statements per shadow write command, and commands in flight (see fleet_status.adapters.mongo)
    status_write_chunk: int = Field(16, ge=1, le=64)
    status_write_concurrency: int = Field(4, ge=1, le=256)
    # outbox entries already relayed are cleared by the device's next write, or after this idle time
    status_outbox_clear_after_s: float = Field(1.0, ge=0)
    status_history_retention_days: float = Field(7.0, gt=0)
    # a report's history is kept in its shadow's journal (written with the shadow: one write per device per
    # flush) and moved to the hourly bucket once the journal holds this many rows or is this old, or when the
    # hour changes (see fleet_status.domain.journal)
    status_journal_max_rows: int = Field(32, ge=1, le=1000)
    status_journal_max_age_s: float = Field(600.0, gt=0, le=86_400)
    # how often expired history buckets are deleted where the server has no TTL indexes (FerretDB)
    status_history_sweep_interval_s: float = Field(300.0, gt=0)
    # reconciliation of stale shadows from the OpenAPI; interval 0 switches it off
    status_reconcile_interval_s: float = Field(60.0, ge=0)
    status_stale_after_s: float = Field(3600.0, gt=0)
    status_reconcile_batch: int = Field(100, ge=1, le=10_000)
    status_reconcile_rate_per_s: float = Field(5.0, gt=0)
    status_schema_ttl_s: float = Field(24 * 3600.0, gt=0)
    # inactivity: a device silent (by device time) longer than its timeout is marked offline, cause
    # `inactivity`, until its next report. Per product (JSON `{"<product id>": seconds}`), else the default;
    # 0 switches it off. A device's own timeout (set through the API) overrides both.
    status_inactivity_timeout_s: float = Field(0.0, ge=0)
    status_inactivity_by_product: dict[str, float] = Field(default_factory=dict)
    status_inactivity_check_interval_s: float = Field(15.0, gt=0)
    status_inactivity_batch: int = Field(1000, ge=1, le=10_000)
    status_shutdown_timeout_s: float = Field(15.0, gt=0)
    # /readyz fails once work has waited this long without a flush completing (a stuck writer is restarted)
    status_writer_stall_s: float = Field(60.0, gt=0)

    def inactivity_ms(self, product_id: str | None) -> int | None:
        """The product's inactivity timeout in ms (None: none)."""
        seconds = self.status_inactivity_by_product.get(product_id or "", self.status_inactivity_timeout_s)
        return round(seconds * 1000) or None
