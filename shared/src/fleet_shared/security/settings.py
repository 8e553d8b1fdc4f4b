"""The security settings every service with an HTTP API mixes into its own (prefix `FLEET_`).

class StatusSettings(SecuritySettings, ServiceSettings): ...
"""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Asymmetric algorithms only: a shared-secret (HS*) or unsigned (`none`) token must never verify.
ALLOWED_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384"})


class SecuritySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLEET_", extra="ignore", frozen=True)

    # JWT bearer tokens from an OIDC issuer; off while oidc_issuer is unset
    oidc_issuer: str | None = None
    oidc_audience: str | None = None
    # taken from the issuer's /.well-known/openid-configuration when unset
    oidc_jwks_uri: str | None = None
    oidc_algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"])
    oidc_clock_skew_s: float = Field(60.0, ge=0, le=600)
    oidc_jwks_ttl_s: float = Field(300.0, gt=0)
    # an unknown `kid` refetches the JWKS (key rotation) at most this often
    oidc_jwks_min_refetch_s: float = Field(30.0, ge=0)
    oidc_http_timeout_s: float = Field(5.0, gt=0)
    # claim names; dotted paths reach nested claims (`realm_access.roles`)
    oidc_roles_claim: str = "roles"
    oidc_scope_claim: str = "scope"
    oidc_products_claim: str = "fleet_products"
    oidc_name_claim: str = "preferred_username"
    # API keys: lookups are cached this long, so a revocation made by another process applies within it
    api_key_cache_ttl_s: float = Field(5.0, ge=0, le=300)
    # the role of a key seeded from the environment without roles of its own
    api_key_default_role: str = "viewer"
    # role -> grants (JSON), replacing the default role table when set
    security_roles: dict[str, list[str]] | None = None

    @field_validator("oidc_algorithms")
    @classmethod
    def _asymmetric_only(cls, algorithms: list[str]) -> list[str]:
        bad = [a for a in algorithms if a not in ALLOWED_ALGORITHMS]
        if bad or not algorithms:
            raise ValueError(f"oidc_algorithms must be a non-empty subset of {sorted(ALLOWED_ALGORITHMS)}")
        return algorithms
