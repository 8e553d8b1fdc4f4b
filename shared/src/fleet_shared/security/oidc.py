"""JWT bearer tokens from an OIDC issuer: signature by the issuer's JWKS, issuer, audience and times.

- Algorithms come from an allow-list of asymmetric ones; `none` and HS* never verify, whatever a token says.
- The JWKS comes from `jwks_uri` (configured, or read from the issuer's discovery document) and is cached for
  `ttl_s`. A token signed with a `kid` the cache lacks refetches the JWKS once (the issuer rotated its keys),
  at most once per `min_refetch_s`, so a flood of made-up kids cannot turn into a flood of fetches.
- When a refetch fails, the keys already known stay in use until a later fetch succeeds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import jwt

from .api_keys import AuthenticationError
from .principal import PERMISSION_PATTERN, Principal, ProductScope, RoleTable
from .settings import ALLOWED_ALGORITHMS, SecuritySettings

log = logging.getLogger(__name__)

Monotonic = Callable[[], float]
_KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC"}
_MAX_DOCUMENT_BYTES = 256 * 1024


class JwksUnavailable(Exception):
    """The issuer's keys could not be fetched and none are cached."""


class Jwks:
    """The issuer's signing keys by kid, fetched and cached."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        issuer: str,
        jwks_uri: str | None = None,
        ttl_s: float = 300.0,
        min_refetch_s: float = 30.0,
        monotonic: Monotonic = time.monotonic,
    ) -> None:
        self._http = http
        self._issuer = issuer
        self._jwks_uri = jwks_uri
        self._ttl_s = ttl_s
        self._min_refetch_s = min_refetch_s
        self._monotonic = monotonic
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._lock = asyncio.Lock()
        self.fetches = 0

    async def key(self, kid: str | None) -> jwt.PyJWK | None:
        """The key for `kid` (a token without kid may use the JWKS's only key), or None when unknown."""
        async with self._lock:
            now = self._monotonic()
            if self._fetched_at is None or now - self._fetched_at >= self._ttl_s:
                await self._refresh(now, force_interval=self._attempted_at is None)
            found = self._find(kid)
            if found is None and self._may_refetch(self._monotonic()):
                log.info("JWT key id %r unknown; refetching the JWKS for a rotated key", kid)
                await self._refresh(self._monotonic(), force_interval=False)
                found = self._find(kid)
            if not self._keys and self._fetched_at is None:
                raise JwksUnavailable("the issuer's JWKS could not be fetched")
            return found

    def _find(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is None:
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    def _may_refetch(self, now: float) -> bool:
        return self._attempted_at is None or now - self._attempted_at >= self._min_refetch_s

    async def _refresh(self, now: float, *, force_interval: bool) -> None:
        if not force_interval and not self._may_refetch(now):
            return
        self._attempted_at = now
        try:
            document = await self._get_json(self._jwks_uri or await self._discover())
            keys = self._parse(document)
        except (httpx.HTTPError, ValueError) as e:
            log.warning(
                "fetching the JWKS of %s failed (%s); keeping %d known keys", self._issuer, e, len(self._keys)
            )
            return
        self._keys = keys
        self._fetched_at = now
        self.fetches += 1

    async def _discover(self) -> str:
        document = await self._get_json(self._issuer.rstrip("/") + "/.well-known/openid-configuration")
        if document.get("issuer") != self._issuer:
            raise ValueError(f"discovery document names issuer {document.get('issuer')!r}")
        uri = document.get("jwks_uri")
        if not isinstance(uri, str) or not uri:
            raise ValueError("discovery document has no jwks_uri")
        self._jwks_uri = uri
        return uri

    async def _get_json(self, url: str) -> dict[str, Any]:
        response = await self._http.get(url, headers={"Accept": "application/json"})
        response.raise_for_status()
        if len(response.content) > _MAX_DOCUMENT_BYTES:
            raise ValueError(f"{url} answered {len(response.content)} bytes")
        document = response.json()
        if not isinstance(document, dict):
            raise ValueError(f"{url} did not answer a JSON object")
        return document

    @staticmethod
    def _parse(document: Mapping[str, Any]) -> dict[str | None, jwt.PyJWK]:
        entries = document.get("keys")
        if not isinstance(entries, list):
            raise ValueError("JWKS has no keys array")
        keys: dict[str | None, jwt.PyJWK] = {}
        for entry in entries:
            if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
                continue
            if "d" in entry or entry.get("kty") not in ("RSA", "EC"):  # public signing keys only
                continue
            try:
                keys[entry.get("kid")] = jwt.PyJWK(entry)
            except jwt.PyJWTError as e:
                log.info("skipping JWKS key %r: %s", entry.get("kid"), e)
        return keys


def _claim(claims: Mapping[str, Any], path: str) -> Any:
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _strings(value: Any) -> list[str]:
    """A claim holding a list of strings or one space-separated string."""
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


class JwtVerifier:
    def __init__(
        self,
        jwks: Jwks,
        roles: RoleTable,
        *,
        issuer: str,
        audience: str,
        algorithms: list[str],
        clock_skew_s: float = 60.0,
        roles_claim: str = "roles",
        scope_claim: str = "scope",
        products_claim: str = "fleet_products",
        name_claim: str = "preferred_username",
    ) -> None:
        bad = set(algorithms) - ALLOWED_ALGORITHMS
        if bad:
            raise ValueError(f"algorithms {sorted(bad)} are not allowed")
        self._jwks = jwks
        self._roles = roles
        self._issuer = issuer
        self._audience = audience
        self._algorithms = frozenset(algorithms)
        self._skew = clock_skew_s
        self._claims = (roles_claim, scope_claim, products_claim, name_claim)

    @classmethod
    def from_settings(
        cls, settings: SecuritySettings, roles: RoleTable, http: httpx.AsyncClient
    ) -> JwtVerifier:
        if not settings.oidc_issuer or not settings.oidc_audience:
            raise ValueError("JWT verification needs FLEET_OIDC_ISSUER and FLEET_OIDC_AUDIENCE")
        jwks = Jwks(
            http,
            issuer=settings.oidc_issuer,
            jwks_uri=settings.oidc_jwks_uri,
            ttl_s=settings.oidc_jwks_ttl_s,
            min_refetch_s=settings.oidc_jwks_min_refetch_s,
        )
        return cls(
            jwks,
            roles,
            issuer=settings.oidc_issuer,
            audience=settings.oidc_audience,
            algorithms=settings.oidc_algorithms,
            clock_skew_s=settings.oidc_clock_skew_s,
            roles_claim=settings.oidc_roles_claim,
            scope_claim=settings.oidc_scope_claim,
            products_claim=settings.oidc_products_claim,
            name_claim=settings.oidc_name_claim,
        )

    async def verify(self, token: str) -> Principal:
        """The token's principal, or AuthenticationError saying (for the log) why it does not verify."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as e:
            raise AuthenticationError(f"malformed JWT: {e}") from None
        alg = header.get("alg")
        if alg not in self._algorithms:
            raise AuthenticationError(f"JWT algorithm {alg!r} is not allowed")
        kid = header.get("kid")
        try:
            key = await self._jwks.key(kid if isinstance(kid, str) else None)
        except JwksUnavailable as e:
            raise AuthenticationError(str(e)) from None
        if key is None:
            raise AuthenticationError(f"JWT key id {kid!r} is not in the issuer's JWKS")
        if key.key_type != _KEY_TYPES[alg[:2]]:
            raise AuthenticationError(f"JWT algorithm {alg} does not fit key {kid!r} of type {key.key_type}")
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._skew,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError as e:
            raise AuthenticationError(f"JWT rejected: {type(e).__name__}: {e}") from None
        return self._principal(claims)

    def _principal(self, claims: Mapping[str, Any]) -> Principal:
        roles_claim, scope_claim, products_claim, name_claim = self._claims
        sub = str(claims["sub"])
        # roles the table does not know are the issuer's business, not ours: they grant nothing here
        roles = frozenset(r for r in _strings(_claim(claims, roles_claim)) if r in self._roles)
        scopes = frozenset(s for s in _strings(_claim(claims, scope_claim)) if PERMISSION_PATTERN.match(s))
        products = _strings(_claim(claims, products_claim))
        # deny by default: a token naming no products reaches none
        scope = ProductScope.all() if "*" in products else ProductScope.only(products)
        name = _claim(claims, name_claim)
        return Principal(
            subject=f"jwt:{sub}",
            display_name=name if isinstance(name, str) and name else sub,
            kind="jwt",
            roles=roles,
            grants=self._roles.grants(roles) | scopes,
            scope=scope,
        )
