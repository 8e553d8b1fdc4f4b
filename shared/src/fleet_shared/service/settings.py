"""Settings every service reads from the environment (prefix `FLEET_`); services subclass to add their own."""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from .process import ProcessSettings


class ServiceSettings(ProcessSettings):
    """The common part of every service's configuration; the README's table documents each variable.
    With the process's own (`ProcessSettings`: Motor's thread pool, freezing the long-lived objects)."""

    model_config = SettingsConfigDict(env_prefix="FLEET_", extra="ignore", frozen=True)

    # where the bus and the database are
    pulsar_url: str = "pulsar://127.0.0.1:6650"
    pulsar_admin_url: str = "http://127.0.0.1:8080"
    mongodb_uri: str = "mongodb://127.0.0.1:27017/"
    # a broker with token authentication and TLS (pulsar+ssl://): the token (the admin API's `Authorization:
    # Bearer` too; never logged) and the CA file that signed the broker's certificate. Read under these exact
    # names, so a service with a prefix of its own (tuya-sim's FLEET_SIM_) reads the same variables.
    pulsar_auth_token: SecretStr = Field(
        SecretStr(""), validation_alias=AliasChoices("FLEET_PULSAR_AUTH_TOKEN", "pulsar_auth_token")
    )
    pulsar_tls_trust_certs_file: str | None = Field(
        None,
        validation_alias=AliasChoices("FLEET_PULSAR_TLS_TRUST_CERTS_FILE", "pulsar_tls_trust_certs_file"),
    )
    # the service's own HTTP server: API, /healthz, /readyz, /metrics
    http_host: str = "0.0.0.0"  # noqa: S104 - containers must listen on their pod address
    http_port: int = 8000
    # on SIGTERM: how long in-flight work may take to finish before the service stops anyway
    shutdown_timeout_s: float = Field(15.0, gt=0)
    log_level: str = "INFO"
    log_format: str = Field("json", pattern="^(json|text)$")
    # the Tuya project this deployment acts for; the secret is never logged
    region: str = "EU"
    tuya_access_id: str = "fleetsimaccess000001"
    tuya_access_secret: SecretStr = SecretStr("")
    tuya_openapi_url: str = "http://127.0.0.1:9010"
    # OpenTelemetry's own variable: traces are exported over OTLP/HTTP when it is set
    otel_exporter_otlp_endpoint: str | None = Field(None, validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT")
