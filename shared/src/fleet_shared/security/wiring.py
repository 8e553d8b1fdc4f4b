"""One call that wires the kit for a service from its settings and its own database.

kit = security_kit(settings, db)             # in bootstrap
await kit.prepare(settings.api_keys.get_secret_value())   # at start: indexes, seeded keys
kit.security.install(app)                   # in the app factory
Depends(kit.security.require("status:read"))
await kit.aclose()                          # at stop
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import httpx
from motor.motor_asyncio import AsyncIOMotorDatabase

from fleet_shared.clock import utcnow
from fleet_shared.mongo import Document

from .api_keys import ApiKeys, Clock
from .http import ApiSecurity
from .mongo import MongoApiKeyStore, MongoAuditLog
from .oidc import JwtVerifier
from .principal import DEFAULT_ROLES, RoleTable
from .settings import SecuritySettings

log = logging.getLogger(__name__)


@dataclass
class SecurityKit:
    settings: SecuritySettings
    roles: RoleTable
    security: ApiSecurity
    api_keys: ApiKeys
    key_store: MongoApiKeyStore
    audit: MongoAuditLog
    http: httpx.AsyncClient | None

    async def prepare(self, seeded_keys: str = "") -> int:
        """Keys stored before this kit adopted, indexes, then the keys configured in the environment; returns
        how many keys were new."""
        adopted = await self.key_store.adopt_legacy(self.settings.api_key_default_role)
        if adopted:
            log.info("adopted %d API keys stored before the security kit", adopted)
        await self.key_store.ensure_indexes()
        await self.audit.ensure_indexes()
        return await self.api_keys.seed(seeded_keys, self.settings.api_key_default_role)

    async def aclose(self) -> None:
        if self.http is not None:
            await self.http.aclose()


def security_kit(
    settings: SecuritySettings, db: AsyncIOMotorDatabase[Document], *, clock: Clock = utcnow
) -> SecurityKit:
    roles = RoleTable(settings.security_roles if settings.security_roles is not None else DEFAULT_ROLES)
    roles.check_roles([settings.api_key_default_role])
    key_store = MongoApiKeyStore(db)
    audit = MongoAuditLog(db)
    api_keys = ApiKeys(key_store, roles, clock, ttl_s=settings.api_key_cache_ttl_s)
    http: httpx.AsyncClient | None = None
    verifier: JwtVerifier | None = None
    if settings.oidc_issuer:
        http = httpx.AsyncClient(timeout=settings.oidc_http_timeout_s, follow_redirects=False)
        verifier = JwtVerifier.from_settings(settings, roles, http)
    security = ApiSecurity(api_keys=api_keys, jwt=verifier, audit=audit, clock=clock)
    return SecurityKit(settings, roles, security, api_keys, key_store, audit, http)
