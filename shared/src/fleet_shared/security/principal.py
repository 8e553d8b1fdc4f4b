"""Who is calling and what they may do: permissions, roles, product scope and the principal.

Rules:
- Deny by default: a principal may do only what one of its roles (or, for a JWT, its scopes) grants.
- A permission is `area:action` (`status:read`, `unbinding:execute`). A role grants permissions by name, or by
  `area:*` (every action of one area) or `*` (everything, for administrators only).
- Product scope is every product or a set of PIDs. `can(permission, product_id)` needs both the permission and
  the product; `can(permission)` checks the permission alone, so a handler that lists across products must
  narrow its query with `Principal.product_filter()`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

PERMISSION_PATTERN = re.compile(r"^[a-z][a-z0-9-]*:[a-z][a-z0-9-]*$")
_GRANT_PATTERN = re.compile(r"^(\*|[a-z][a-z0-9-]*:(\*|[a-z][a-z0-9-]*))$")


class Permission(StrEnum):
    """The permissions the fleet's services check. A service with new actions declares its own StrEnum of
    `area:action` names beside its routes; every check here takes any `str`, so both kinds mix freely."""

    STATUS_READ = "status:read"
    STATUS_WRITE = "status:write"
    PAIRING_READ = "pairing:read"
    PAIRING_WRITE = "pairing:write"
    UNBINDING_READ = "unbinding:read"
    UNBINDING_EXECUTE = "unbinding:execute"
    UNBINDING_ADMIN = "unbinding:admin"
    OTA_READ = "ota:read"
    OTA_WRITE = "ota:write"
    OTA_RELEASE = "ota:release"
    API_KEYS_ADMIN = "api-keys:admin"
    AUDIT_READ = "audit:read"


# The role table used unless settings override it (FLEET_SECURITY_ROLES, a JSON object of role -> grants).
DEFAULT_ROLES: Mapping[str, frozenset[str]] = {
    "viewer": frozenset({"status:read", "pairing:read", "unbinding:read", "ota:read"}),
    "operator": frozenset(
        {
            "status:read",
            "status:write",
            "pairing:read",
            "pairing:write",
            "unbinding:read",
            "unbinding:execute",
            "ota:read",
        }
    ),
    "firmware": frozenset({"status:read", "ota:read", "ota:write", "ota:release"}),
    "auditor": frozenset({"audit:read", "status:read", "pairing:read", "unbinding:read", "ota:read"}),
    "admin": frozenset({"*"}),
}


def check_permission_name(name: str) -> str:
    if not PERMISSION_PATTERN.match(name):
        raise ValueError(f"permission {name!r} is not of the form area:action")
    return name


class RoleTable:
    """Role name -> grants. Unknown roles grant nothing and are refused where roles are assigned."""

    def __init__(self, roles: Mapping[str, Iterable[str]] = DEFAULT_ROLES) -> None:
        table: dict[str, frozenset[str]] = {}
        for role, grants in roles.items():
            bad = [g for g in grants if not _GRANT_PATTERN.match(g)]
            if bad:
                raise ValueError(f"role {role!r} has malformed grants {bad}")
            table[role] = frozenset(grants)
        self._roles = table

    def __contains__(self, role: object) -> bool:
        return role in self._roles

    def grants(self, roles: Iterable[str]) -> frozenset[str]:
        return frozenset().union(*(self._roles.get(r, frozenset()) for r in roles))

    def check_roles(self, roles: Iterable[str]) -> tuple[str, ...]:
        """The roles, in order, or ValueError naming the unknown ones (a typo must not pass silently)."""
        roles = tuple(roles)
        unknown = [r for r in roles if r not in self._roles]
        if unknown:
            raise ValueError(f"unknown roles {unknown}; known: {sorted(self._roles)}")
        return roles


@dataclass(frozen=True)
class ProductScope:
    """Every product (`products is None`) or only these PIDs."""

    products: frozenset[str] | None = None

    @classmethod
    def all(cls) -> ProductScope:
        return cls(None)

    @classmethod
    def only(cls, products: Iterable[str]) -> ProductScope:
        return cls(frozenset(products))

    def covers(self, product_id: str) -> bool:
        return self.products is None or product_id in self.products

    def to_document(self) -> list[str] | None:
        return None if self.products is None else sorted(self.products)

    @classmethod
    def from_document(cls, value: object) -> ProductScope:
        if value is None:
            return cls.all()
        if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
            raise ValueError(f"product scope must be null or a list of PIDs, not {value!r}")
        return cls.only(value)


def _granted(grants: frozenset[str], permission: str) -> bool:
    area = permission.partition(":")[0]
    return "*" in grants or permission in grants or f"{area}:*" in grants


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: an API key or the subject of a verified JWT."""

    subject: str
    display_name: str
    kind: Literal["api_key", "jwt"]
    roles: frozenset[str] = frozenset()
    # what the roles (and JWT scopes) grant: permission names, `area:*` or `*`
    grants: frozenset[str] = frozenset()
    scope: ProductScope = field(default_factory=ProductScope.all)

    def can(self, permission: str, product_id: str | None = None) -> bool:
        return self.refusal(permission, product_id) is None

    def refusal(self, permission: str, product_id: str | None = None) -> str | None:
        """Why the principal may not do this, in words fit for a 403 body, or None when it may."""
        check_permission_name(permission)
        if not _granted(self.grants, permission):
            suffix = f" for product {product_id}" if product_id is not None else ""
            return f"missing permission {permission}{suffix}"
        if product_id is not None and not self.scope.covers(product_id):
            return f"product {product_id} is outside this credential's product scope ({permission})"
        return None

    def product_filter(self) -> frozenset[str] | None:
        """The PIDs a cross-product query must be narrowed to, or None for every product."""
        return self.scope.products
