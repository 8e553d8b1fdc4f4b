"""Who may unbind the devices of a product: Tuya's authorization model, as data.

Rules (Tuya's batch-unbinding guide, step 1):
- The developer account that owns a product (PID) may unbind its devices.
- The owner may authorize a partner account for the product ("Authorize Development").
- The owner may give a space member a role scoped to the product: After-sale or Administrator always carry
  the permission "unbind devices in batches"; a custom role only when it lists that permission.
- OEM products: the original PID owner is authorized automatically when the product is registered with one
  (or when the PID is transferred, the previous owner becomes the original owner); the current owner can
  revoke and re-grant that authorization.
- Only the current owner manages a product's authorizations (a platform administrator may act for it).
- Nothing is ever deleted: the state of a product is the fold of its append-only records, in sequence order.
  A revocation ends the grant it names; a later grant to the same account starts a new one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

UNBIND_PERMISSION = "unbind_devices_in_batches"


class GrantKind(StrEnum):
    PARTNER = "partner"  # "Authorize Development" for the product
    SPACE_ROLE = "space_role"  # a member of the owner's space with a role scoped to the product
    OEM_ORIGINAL_OWNER = "oem_original_owner"  # the original PID owner of an OEM product


OEM = GrantKind.OEM_ORIGINAL_OWNER


class SpaceRole(StrEnum):
    AFTER_SALE = "after_sale"
    ADMINISTRATOR = "administrator"
    CUSTOM = "custom"


class RecordKind(StrEnum):
    REGISTERED = "registered"  # the product and its owner (and original owner for OEM products)
    TRANSFERRED = "transferred"  # the PID moved to a new owner; the previous one becomes the original owner
    GRANTED = "granted"
    REVOKED = "revoked"


class Basis(StrEnum):
    """Why an account may unbind a product's devices (kept with each result)."""

    OWNER = "owner"
    PARTNER = "partner"
    SPACE_ROLE = "space_role"
    OEM_ORIGINAL_OWNER = "oem_original_owner"


class AuthorizationError(ValueError):
    """A management request that breaks a rule; nothing is recorded."""


@dataclass(frozen=True, slots=True)
class Grant:
    account: str
    kind: GrantKind
    role: SpaceRole | None = None
    permissions: frozenset[str] = frozenset()

    def carries_unbind_permission(self) -> bool:
        if self.kind is not GrantKind.SPACE_ROLE:
            return True
        if self.role in (SpaceRole.AFTER_SALE, SpaceRole.ADMINISTRATOR):
            return True
        return UNBIND_PERMISSION in self.permissions


@dataclass(frozen=True, slots=True)
class AuthorizationRecord:
    """One append-only entry of a product's authorization history; `seq` orders it within the product."""

    product_id: str
    seq: int
    kind: RecordKind
    actor: str
    at: datetime
    account: str  # the owner (registered/transferred) or the grantee (granted/revoked)
    grant_kind: GrantKind | None = None
    role: SpaceRole | None = None
    permissions: tuple[str, ...] = ()
    original_owner: str | None = None  # registered: the OEM original PID owner, if any
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class ProductAuthorization:
    """The current authorizations of one product, folded from its records."""

    product_id: str
    owner: str | None = None
    original_owner: str | None = None
    grants: dict[tuple[str, GrantKind], Grant] = field(default_factory=dict)
    seq: int = 0  # sequence of the last record applied

    @property
    def registered(self) -> bool:
        return self.owner is not None

    def basis_for(self, account: str) -> Basis | None:
        """Why `account` may unbind this product's devices, or None when it may not."""
        if self.owner is not None and account == self.owner:
            return Basis.OWNER
        for kind, basis in (
            (GrantKind.OEM_ORIGINAL_OWNER, Basis.OEM_ORIGINAL_OWNER),
            (GrantKind.PARTNER, Basis.PARTNER),
            (GrantKind.SPACE_ROLE, Basis.SPACE_ROLE),
        ):
            grant = self.grants.get((account, kind))
            if grant is not None and grant.carries_unbind_permission():
                return basis
        return None

    def may_unbind(self, account: str) -> bool:
        return self.basis_for(account) is not None

    def may_manage(self, actor: str, *, platform_admin: bool = False) -> bool:
        return platform_admin or (self.owner is not None and actor == self.owner)


def apply(state: ProductAuthorization, record: AuthorizationRecord) -> ProductAuthorization:
    """The state after one record (records must come in sequence order; a replayed one changes nothing)."""
    if record.seq <= state.seq:
        return state
    grants = dict(state.grants)
    owner, original = state.owner, state.original_owner
    match record.kind:
        case RecordKind.REGISTERED:
            owner, original = record.account, record.original_owner
            if original is not None:
                grants[(original, OEM)] = Grant(original, OEM)
        case RecordKind.TRANSFERRED:
            original = state.original_owner or state.owner
            owner = record.account
            if original is not None and original != owner:
                grants[(original, OEM)] = Grant(original, OEM)
        case RecordKind.GRANTED:
            assert record.grant_kind is not None
            grants[(record.account, record.grant_kind)] = Grant(
                record.account, record.grant_kind, record.role, frozenset(record.permissions)
            )
        case RecordKind.REVOKED:
            assert record.grant_kind is not None
            grants.pop((record.account, record.grant_kind), None)
    return replace(state, owner=owner, original_owner=original, grants=grants, seq=record.seq)


def fold(product_id: str, records: Iterable[AuthorizationRecord]) -> ProductAuthorization:
    state = ProductAuthorization(product_id)
    for record in sorted(records, key=lambda r: r.seq):
        state = apply(state, record)
    return state


# --- management: each returns the record to append (conditional on `state.seq`) -----------------------


def register(
    state: ProductAuthorization, *, owner: str, original_owner: str | None, actor: str, at: datetime
) -> AuthorizationRecord:
    """Register a product and its owner; an OEM product names its original PID owner (auto-authorized)."""
    if state.registered:
        raise AuthorizationError(f"product {state.product_id} is already registered")
    if original_owner == owner:
        original_owner = None
    return AuthorizationRecord(
        state.product_id,
        state.seq + 1,
        RecordKind.REGISTERED,
        actor,
        at,
        owner,
        original_owner=original_owner,
    )


def transfer(
    state: ProductAuthorization, *, new_owner: str, actor: str, at: datetime, platform_admin: bool = False
) -> AuthorizationRecord:
    _require_manager(state, actor, platform_admin)
    if new_owner == state.owner:
        raise AuthorizationError("the product already belongs to that account")
    return AuthorizationRecord(state.product_id, state.seq + 1, RecordKind.TRANSFERRED, actor, at, new_owner)


def grant(
    state: ProductAuthorization,
    *,
    account: str,
    kind: GrantKind,
    actor: str,
    at: datetime,
    role: SpaceRole | None = None,
    permissions: Sequence[str] = (),
    reason: str | None = None,
    platform_admin: bool = False,
) -> AuthorizationRecord:
    _require_manager(state, actor, platform_admin)
    if account == state.owner:
        raise AuthorizationError("the owner needs no grant")
    if kind is GrantKind.SPACE_ROLE and role is None:
        raise AuthorizationError("a space-role grant needs a role")
    if kind is not GrantKind.SPACE_ROLE and (role is not None or permissions):
        raise AuthorizationError("only space-role grants carry a role and permissions")
    if kind is GrantKind.OEM_ORIGINAL_OWNER and account != state.original_owner:
        raise AuthorizationError("only the original PID owner can hold the OEM grant")
    return AuthorizationRecord(
        state.product_id,
        state.seq + 1,
        RecordKind.GRANTED,
        actor,
        at,
        account,
        grant_kind=kind,
        role=role,
        permissions=tuple(sorted(set(permissions))),
        reason=reason,
    )


def revoke(
    state: ProductAuthorization,
    *,
    account: str,
    kind: GrantKind,
    actor: str,
    at: datetime,
    reason: str | None = None,
    platform_admin: bool = False,
) -> AuthorizationRecord:
    _require_manager(state, actor, platform_admin)
    if (account, kind) not in state.grants:
        raise AuthorizationError(f"{account} holds no {kind} grant on {state.product_id}")
    return AuthorizationRecord(
        state.product_id,
        state.seq + 1,
        RecordKind.REVOKED,
        actor,
        at,
        account,
        grant_kind=kind,
        reason=reason,
    )


def _require_manager(state: ProductAuthorization, actor: str, platform_admin: bool) -> None:
    if not state.registered:
        raise AuthorizationError(f"product {state.product_id} is not registered")
    if not state.may_manage(actor, platform_admin=platform_admin):
        raise AuthorizationError("only the product's current owner manages its authorizations")
