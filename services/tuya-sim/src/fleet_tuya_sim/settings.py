"""tuya-sim's configuration from the environment: `FLEET_SIM_*`, plus the project's `FLEET_TUYA_ACCESS_ID`,
`FLEET_TUYA_ACCESS_SECRET`, `FLEET_PULSAR_URL`, `FLEET_HTTP_HOST/PORT` and `FLEET_LOG_*` shared with the rest
of tuya-fleet. A `ServiceSettings`, so the service kit's `run_service` runs it like every other service."""

from __future__ import annotations

from typing import Annotated

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from fleet_shared.service import ServiceSettings
from fleet_shared.tuya.codec import EncryptionMode
from fleet_tuya_sim.domain.push_messages import MessageFamily

# A development-only default so `fleet-tuya-sim serve` works out of the box; set a real one anywhere else.
DEV_ACCESS_SECRET = "fleetsim0dev0secret0000000000000"  # noqa: S105
# The password of the simulated app's accounts (the fleet's home owners), development only as well.
DEV_APP_PASSWORD = "fleetsim-app-password"  # noqa: S105


class SimSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="FLEET_SIM_", populate_by_name=True, extra="ignore", frozen=True
    )

    access_id: str = Field(
        "fleetsimaccess000001", validation_alias=AliasChoices("FLEET_TUYA_ACCESS_ID", "access_id")
    )
    access_secret: SecretStr = Field(
        SecretStr(DEV_ACCESS_SECRET),
        validation_alias=AliasChoices("FLEET_TUYA_ACCESS_SECRET", "access_secret"),
    )
    # Other projects (access id -> secret): valid signatures, but no rights on this fleet (1106).
    extra_projects: dict[str, SecretStr] = Field(default_factory=dict)
    # empty: push messages stay in memory (unlike the other services, the sim runs without a broker)
    pulsar_url: str = Field("", validation_alias=AliasChoices("FLEET_PULSAR_URL", "pulsar_url"))
    pulsar_admin_url: str = Field(
        "", validation_alias=AliasChoices("FLEET_PULSAR_ADMIN_URL", "pulsar_admin_url")
    )
    # Create Tuya's topic layout (tenant, namespace `out`, 11 partitions) at startup, given an admin URL.
    provision: bool = False
    topic: str | None = None  # default: persistent://{access_id}/out/event

    # The kit's common settings under the names the local stack gives every service (FLEET_HTTP_HOST/PORT,
    # ...); FLEET_SIM_HOST/PORT still work. Loopback by default: the sim is a development tool.
    http_host: str = Field(
        "127.0.0.1", validation_alias=AliasChoices("FLEET_SIM_HOST", "FLEET_HTTP_HOST", "http_host", "host")
    )
    http_port: int = Field(
        9010, validation_alias=AliasChoices("FLEET_SIM_PORT", "FLEET_HTTP_PORT", "http_port", "port")
    )
    log_level: str = Field(
        "INFO", validation_alias=AliasChoices("FLEET_SIM_LOG_LEVEL", "FLEET_LOG_LEVEL", "log_level")
    )
    log_format: str = Field(
        "json", pattern="^(json|text)$", validation_alias=AliasChoices("FLEET_LOG_FORMAT", "log_format")
    )
    shutdown_timeout_s: float = Field(
        15.0,
        gt=0,
        validation_alias=AliasChoices(
            "FLEET_SIM_SHUTDOWN_TIMEOUT_S", "FLEET_SHUTDOWN_TIMEOUT_S", "shutdown_timeout_s"
        ),
    )
    control_token: SecretStr | None = None  # bearer token for /sim/*; none: open (development)

    # The fleet created at startup.
    seed: int = 1
    devices: int = 100
    homes: int = 10
    regions: Annotated[tuple[str, ...], NoDecode] = ("eu", "us")  # comma-separated in the environment
    unbound: int = 0

    # OpenAPI behaviour.
    token_lifetime_s: int = 7200
    max_clock_skew_s: int = 300
    rate_limit_rps: float = 50.0  # per project; 0 switches the limit off
    rate_limit_burst: float = 100.0
    pairing_token_lifetime_s: int = 600
    pairing_ez_max_devices: int = 1
    # The app linked to the project (tuya-iot-py-sdk's `connect`): its schema and its accounts' password.
    app_schema: str = "smartlife"
    app_password: SecretStr = SecretStr(DEV_APP_PASSWORD)

    # Message push. `encryption` is the project's choice in Tuya's console (Message Service settings):
    # aes_ecb (the older mode; the only one tuya-connector-python's TuyaOpenPulsar decrypts) or aes_gcm.
    message_family: MessageFamily = MessageFamily.LEGACY
    encryption: EncryptionMode = EncryptionMode.GCM
    max_in_flight: int = 500
    batching: bool = True
    batching_max_delay_ms: int = 10
    truth_max_messages: int = 1_000_000

    # Chaos (tests): duplicate ratio and shuffle window of the published stream.
    chaos_duplicate_ratio: float = 0.0
    chaos_shuffle_window: int = 0

    # Devices and OTA.
    wake_window_s: float = 30.0
    ota_step_ms: int = 1000
    ota_step_pct: int = 20
    ota_failure_ratio: float = 0.0
    ota_timeout_ratio: float = 0.0

    @field_validator("regions", mode="before")
    @classmethod
    def _split_regions(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(r.strip() for r in value.split(",") if r.strip())
        return value

    @field_validator("access_secret")
    @classmethod
    def _secret_long_enough(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 24:
            raise ValueError("the access secret must have at least 24 characters (its 8..23 are the AES key)")
        return value
