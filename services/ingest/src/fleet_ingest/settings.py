"""ingest's configuration: the common `FLEET_` settings plus Tuya's Pulsar endpoint and the pipeline knobs."""

from __future__ import annotations

from pydantic import Field

from fleet_shared.service import ServiceSettings


class IngestSettings(ServiceSettings):
    # Tuya's message push service. Unset: the simulator's topics on the internal Pulsar (`pulsar_url`, with
    # its token and CA: FLEET_PULSAR_AUTH_TOKEN, FLEET_PULSAR_TLS_TRUST_CERTS_FILE).
    tuya_pulsar_url: str | None = None
    tuya_pulsar_auth: bool | None = Field(
        None, description="Send Tuya's auth1 credentials; unset = only to a pulsar+ssl:// Tuya URL."
    )
    tuya_tls_trust_certs_file: str | None = None
    tuya_tls_allow_insecure: bool = False
    tuya_tls_validate_hostname: bool = False
    tuya_test_channel: bool = False
    tuya_verify_sign: bool = False
    tuya_max_message_bytes: int = Field(256 * 1024, ge=1024)

    ingest_database: str = "ingest"
    ingest_max_in_flight: int = Field(4000, ge=1, le=10_000)
    ingest_receiver_queue_size: int = Field(1000, ge=1)
    ingest_dedup_window_seconds: float = Field(7200.0, gt=0)
    ingest_dedup_window_entries: int = Field(500_000, ge=1)
    ingest_dedup_store_ttl_seconds: float = Field(6 * 3600.0, gt=0)
    ingest_batching_delay_ms: int = Field(5, ge=0)
    ingest_trace_messages: bool = True
    ingest_shutdown_timeout_seconds: float = Field(15.0, gt=0)
    ingest_handover_hold_seconds: float = Field(
        2.0,
        ge=0,
        description="Hold a partition new to this replica this long: above the broker's "
        "activeConsumerFailoverDelayTimeMillis (1 s by default); 0 turns the handover guard off.",
    )

    ingest_handover_probe: bool | None = Field(
        None,
        description="End a partition's hold early when the broker's admin API (FLEET_PULSAR_ADMIN_URL) "
        "shows nothing before it unacknowledged; unset = only with the simulator on our own bus (Tuya's "
        "cloud has no admin API).",
    )

    @property
    def handover_probe(self) -> bool:
        return self.tuya_simulated if self.ingest_handover_probe is None else self.ingest_handover_probe

    @property
    def tuya_url(self) -> str:
        return self.tuya_pulsar_url or self.pulsar_url

    @property
    def tuya_simulated(self) -> bool:
        """Tuya's topics are the simulator's, on our own bus."""
        return self.tuya_pulsar_url is None

    @property
    def tuya_authenticate(self) -> bool:
        if self.tuya_pulsar_auth is not None:
            return self.tuya_pulsar_auth
        # our own bus takes its own token, never Tuya's auth1 (even over TLS)
        return not self.tuya_simulated and self.tuya_url.startswith("pulsar+ssl://")
