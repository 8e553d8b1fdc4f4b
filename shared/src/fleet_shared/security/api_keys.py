"""API keys: issue (plaintext shown once), list, revoke, seed from the environment, and authenticate.

Only the sha256 of a key is stored. That is enough for keys issued here (`fk_<id>_<secret>`, 256 random bits):
a slow password hash defends guessable secrets, and nobody can guess 2**256; a fast hash also lets a presented
key be found by an indexed equality lookup. Seeded keys are chosen by the operator, so they should be as long
(a warning is logged for short ones).

Lookups are cached per process for `ttl` seconds (FLEET_API_KEY_CACHE_TTL_S, 5 s by default). A revocation
made through this process applies at once; one made through another process applies here within the TTL.
Expiry is checked against the clock on every request, cached or not.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from .principal import Principal, ProductScope, RoleTable

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
KEY_PREFIX = "fk_"
_MIN_SEEDED_KEY_LENGTH = 32
_CACHE_MAX_ENTRIES = 10_000


class AuthenticationError(Exception):
    """A credential is missing, unknown, revoked, expired or malformed. The message is for the log (it never
    holds the credential) and is never shown to the caller."""


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> tuple[str, str]:
    """A fresh (key id, plaintext key)."""
    key_id = secrets.token_hex(8)
    return key_id, f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


@dataclass(frozen=True)
class ApiKey:
    """A stored key, without its secret."""

    key_id: str
    name: str
    roles: tuple[str, ...]
    scope: ProductScope
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None
    seeded: bool = False

    def refusal(self, now: datetime) -> str | None:
        if self.revoked_at is not None:
            return f"API key {self.key_id} was revoked at {self.revoked_at.isoformat()}"
        if self.expires_at is not None and now >= self.expires_at:
            return f"API key {self.key_id} expired at {self.expires_at.isoformat()}"
        return None


class ApiKeyStore(Protocol):
    """Where keys live: the service's own `api_keys` collection (see `fleet_shared.security.mongo`)."""

    async def insert(self, key: ApiKey, key_hash: str) -> bool:
        """Store a new key; False when a key with this hash is already stored."""
        ...

    async def find_by_hash(self, key_hash: str) -> ApiKey | None: ...

    async def list(self) -> list[ApiKey]: ...

    async def revoke(self, key_id: str, at: datetime) -> bool:
        """Mark the key revoked (once; a later revoke keeps the first time); False for an unknown key."""
        ...

    async def update_seeded(self, key_hash: str, name: str, roles: tuple[str, ...]) -> None:
        """Bring a seeded, unrevoked key's name and roles in line with the environment."""
        ...

    async def touch(self, key_id: str, at: datetime) -> None:
        """Record the last use (best effort, at most once per cache TTL per key)."""
        ...


@dataclass(frozen=True)
class SeededKey:
    name: str
    key: str
    roles: tuple[str, ...]


def parse_seeded_keys(text: str, default_role: str) -> list[SeededKey]:
    """`name:key[:role+role],bare-key` -> keys; a key without roles gets `default_role`, a bare key a name
    `key-<n>`. The format status used (`name:key`, bare keys) reads the same."""
    keys: list[SeededKey] = []
    for i, item in enumerate(p.strip() for p in text.split(",")):
        if not item:
            continue
        parts = item.split(":", 2)
        if len(parts) == 1 or not parts[1]:
            name, key, roles = f"key-{i + 1}", item, ""
        else:
            name, key, roles = parts[0], parts[1], parts[2] if len(parts) == 3 else ""
        role_list = tuple(r for r in roles.split("+") if r) or (default_role,)
        keys.append(SeededKey(name or f"key-{i + 1}", key, role_list))
    return keys


class ApiKeys:
    """Issue, list, revoke and seed keys, and turn a presented key into a principal."""

    def __init__(self, store: ApiKeyStore, roles: RoleTable, clock: Clock, *, ttl_s: float = 5.0) -> None:
        self._store = store
        self._roles = roles
        self._clock = clock
        self._ttl_s = ttl_s
        # key hash -> (key, when it was read); only found keys are cached, so random guesses cannot fill it
        self._cache: OrderedDict[str, tuple[ApiKey, datetime]] = OrderedDict()

    async def issue(
        self,
        name: str,
        roles: Iterable[str],
        scope: ProductScope | None = None,
        expires_at: datetime | None = None,
    ) -> tuple[ApiKey, str]:
        """A new key and its plaintext, which is never stored and cannot be shown again."""
        if not name or len(name) > 100:
            raise ValueError("a key needs a name of 1 to 100 characters")
        checked = self._roles.check_roles(roles)
        if not checked:
            raise ValueError("a key needs at least one role")
        now = self._clock()
        if expires_at is not None and expires_at <= now:
            raise ValueError("expires_at is in the past")
        key_id, plaintext = new_key()
        key = ApiKey(key_id, name, checked, scope or ProductScope.all(), now, expires_at)
        if not await self._store.insert(key, hash_key(plaintext)):  # 256 random bits never collide
            raise RuntimeError("a freshly generated API key collided with a stored one")
        return key, plaintext

    async def list(self) -> list[ApiKey]:
        return await self._store.list()

    async def revoke(self, key_id: str) -> bool:
        revoked = await self._store.revoke(key_id, self._clock())
        for key_hash, (key, _) in list(self._cache.items()):
            if key.key_id == key_id:
                del self._cache[key_hash]
        return revoked

    async def seed(self, text: str, default_role: str) -> int:
        """Store the keys configured in the environment; returns how many were new. A seeded key that was
        revoked stays revoked (restarting must not bring it back); an unrevoked one takes the roles and name
        the environment gives now."""
        added = 0
        for seeded in parse_seeded_keys(text, default_role):
            roles = self._roles.check_roles(seeded.roles)
            if len(seeded.key) < _MIN_SEEDED_KEY_LENGTH:
                log.warning(
                    "seeded API key %r is shorter than %d characters", seeded.name, _MIN_SEEDED_KEY_LENGTH
                )
            key_hash = hash_key(seeded.key)
            key = ApiKey(
                secrets.token_hex(8), seeded.name, roles, ProductScope.all(), self._clock(), seeded=True
            )
            if await self._store.insert(key, key_hash):
                added += 1
            else:
                await self._store.update_seeded(key_hash, seeded.name, roles)
        return added

    async def authenticate(self, presented: str) -> Principal:
        now = self._clock()
        key_hash = hash_key(presented)
        key = self._cached(key_hash, now)
        if key is None:
            key = await self._store.find_by_hash(key_hash)
            if key is None:
                raise AuthenticationError("unknown API key")
            self._remember(key_hash, key, now)
            if key.refusal(now) is None:
                await self._touch(key.key_id, now)
        refusal = key.refusal(now)
        if refusal is not None:
            raise AuthenticationError(refusal)
        return Principal(
            subject=f"api-key:{key.key_id}",
            display_name=key.name,
            kind="api_key",
            roles=frozenset(key.roles),
            grants=self._roles.grants(key.roles),
            scope=key.scope,
        )

    async def _touch(self, key_id: str, now: datetime) -> None:
        try:
            await self._store.touch(key_id, now)
        except Exception as e:  # last use is a convenience; it must not turn a good key away
            log.warning("recording the last use of API key %s failed: %r", key_id, e)

    def _cached(self, key_hash: str, now: datetime) -> ApiKey | None:
        hit = self._cache.get(key_hash)
        if hit is None:
            return None
        key, read_at = hit
        if (now - read_at).total_seconds() >= self._ttl_s or now < read_at:
            del self._cache[key_hash]
            return None
        return key

    def _remember(self, key_hash: str, key: ApiKey, now: datetime) -> None:
        if self._ttl_s <= 0:
            return
        self._cache[key_hash] = (key, now)
        self._cache.move_to_end(key_hash)
        while len(self._cache) > _CACHE_MAX_ENTRIES:
            self._cache.popitem(last=False)
