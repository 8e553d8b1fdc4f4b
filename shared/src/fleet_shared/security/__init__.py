"""API security for every service: API keys and OIDC JWTs, principals with roles and product scope, 401/403
answers as problem+json, and an append-only audit trail of state-changing calls. Start at `wiring.py`."""

from .api_keys import ApiKey, ApiKeys, ApiKeyStore, AuthenticationError, hash_key, parse_seeded_keys
from .audit import AuditLog, AuditRecord
from .http import (
    ApiSecurity,
    AuditMiddleware,
    CurrentPrincipal,
    Forbidden,
    Unauthorized,
    check,
    current_principal,
)
from .mongo import MongoApiKeyStore, MongoAuditLog
from .oidc import Jwks, JwtVerifier
from .principal import DEFAULT_ROLES, Permission, Principal, ProductScope, RoleTable
from .settings import SecuritySettings
from .wiring import SecurityKit, security_kit

__all__ = [
    "DEFAULT_ROLES",
    "ApiKey",
    "ApiKeyStore",
    "ApiKeys",
    "ApiSecurity",
    "AuditLog",
    "AuditMiddleware",
    "AuditRecord",
    "AuthenticationError",
    "CurrentPrincipal",
    "Forbidden",
    "Jwks",
    "JwtVerifier",
    "MongoApiKeyStore",
    "MongoAuditLog",
    "Permission",
    "Principal",
    "ProductScope",
    "RoleTable",
    "SecurityKit",
    "SecuritySettings",
    "Unauthorized",
    "check",
    "current_principal",
    "hash_key",
    "parse_seeded_keys",
    "security_kit",
]
