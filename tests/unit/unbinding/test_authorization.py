"""Authorization rules: owner, partner per product, space roles with and without the permission, OEM
original PID owner, revoked and re-granted grants, who may manage."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from fleet_unbinding.domain import authorization as authz
from fleet_unbinding.domain.authorization import (
    UNBIND_PERMISSION,
    AuthorizationError,
    Basis,
    GrantKind,
    ProductAuthorization,
    SpaceRole,
)

pytestmark = pytest.mark.unit

AT = datetime(2026, 11, 29, tzinfo=UTC)


def product(pid: str = "p1", *, owner: str = "dev", original: str | None = None) -> ProductAuthorization:
    state = ProductAuthorization(pid)
    return authz.apply(state, authz.register(state, owner=owner, original_owner=original, actor="dev", at=AT))


def granted(
    state: ProductAuthorization,
    account: str,
    kind: GrantKind,
    *,
    role: SpaceRole | None = None,
    permissions: tuple[str, ...] | list[str] = (),
) -> ProductAuthorization:
    owner = state.owner or ""
    record = authz.grant(
        state, account=account, kind=kind, actor=owner, at=AT, role=role, permissions=permissions
    )
    return authz.apply(state, record)


def test_the_owner_may_unbind_and_nobody_else_by_default() -> None:
    p = product()
    assert p.basis_for("dev") is Basis.OWNER
    assert not p.may_unbind("stranger")
    assert not ProductAuthorization("unregistered").may_unbind("dev")


def test_a_partner_is_authorized_for_the_granted_product_only() -> None:
    p1 = granted(product("p1"), "partner", GrantKind.PARTNER)
    p2 = product("p2")
    assert p1.basis_for("partner") is Basis.PARTNER
    assert not p2.may_unbind("partner")


@pytest.mark.parametrize("role", [SpaceRole.AFTER_SALE, SpaceRole.ADMINISTRATOR])
def test_after_sale_and_administrator_roles_carry_the_permission(role: SpaceRole) -> None:
    p = granted(product(), "member", GrantKind.SPACE_ROLE, role=role)
    assert p.basis_for("member") is Basis.SPACE_ROLE


def test_a_custom_role_needs_the_unbind_permission() -> None:
    without = granted(
        product(), "m1", GrantKind.SPACE_ROLE, role=SpaceRole.CUSTOM, permissions=["view_devices"]
    )
    with_it = granted(
        product(), "m2", GrantKind.SPACE_ROLE, role=SpaceRole.CUSTOM, permissions=[UNBIND_PERMISSION]
    )
    assert not without.may_unbind("m1")
    assert with_it.basis_for("m2") is Basis.SPACE_ROLE


def test_the_original_pid_owner_of_an_oem_product_is_authorized_automatically() -> None:
    p = product(owner="brand", original="odm")
    assert p.basis_for("odm") is Basis.OEM_ORIGINAL_OWNER
    assert p.basis_for("brand") is Basis.OWNER


def test_the_current_owner_revokes_and_regrants_the_oem_authorization() -> None:
    p = product(owner="brand", original="odm")
    revoked = authz.apply(
        p, authz.revoke(p, account="odm", kind=GrantKind.OEM_ORIGINAL_OWNER, actor="brand", at=AT)
    )
    assert not revoked.may_unbind("odm")
    again = granted(revoked, "odm", GrantKind.OEM_ORIGINAL_OWNER)
    assert again.may_unbind("odm")
    with pytest.raises(AuthorizationError, match="original PID owner"):
        authz.grant(revoked, account="someone", kind=GrantKind.OEM_ORIGINAL_OWNER, actor="brand", at=AT)


def test_a_transferred_pid_authorizes_its_previous_owner_as_original_owner() -> None:
    p = product(owner="odm")
    moved = authz.apply(p, authz.transfer(p, new_owner="brand", actor="odm", at=AT))
    assert moved.owner == "brand"
    assert moved.basis_for("odm") is Basis.OEM_ORIGINAL_OWNER
    assert moved.may_manage("brand")
    assert not moved.may_manage("odm")


def test_a_revoked_grant_no_longer_authorizes() -> None:
    p = granted(product(), "partner", GrantKind.PARTNER)
    r = authz.revoke(
        p, account="partner", kind=GrantKind.PARTNER, actor="dev", at=AT, reason="contract ended"
    )
    assert not authz.apply(p, r).may_unbind("partner")
    with pytest.raises(AuthorizationError, match="holds no"):
        authz.revoke(authz.apply(p, r), account="partner", kind=GrantKind.PARTNER, actor="dev", at=AT)


def test_only_the_owner_or_a_platform_admin_manages_grants() -> None:
    p = product()
    with pytest.raises(AuthorizationError, match="current owner"):
        authz.grant(p, account="x", kind=GrantKind.PARTNER, actor="partner", at=AT)
    record = authz.grant(p, account="x", kind=GrantKind.PARTNER, actor="ops", at=AT, platform_admin=True)
    assert authz.apply(p, record).may_unbind("x")


def test_grant_shapes_are_checked() -> None:
    p = product()
    with pytest.raises(AuthorizationError, match="needs a role"):
        authz.grant(p, account="m", kind=GrantKind.SPACE_ROLE, actor="dev", at=AT)
    with pytest.raises(AuthorizationError, match="only space-role"):
        authz.grant(p, account="m", kind=GrantKind.PARTNER, actor="dev", at=AT, role=SpaceRole.CUSTOM)
    with pytest.raises(AuthorizationError, match="owner needs no grant"):
        authz.grant(p, account="dev", kind=GrantKind.PARTNER, actor="dev", at=AT)
    with pytest.raises(AuthorizationError, match="already registered"):
        authz.register(p, owner="dev", original_owner=None, actor="dev", at=AT)


def test_the_state_is_the_fold_of_the_records_in_sequence_order_and_replays_change_nothing() -> None:
    s0 = ProductAuthorization("p1")
    r1 = authz.register(s0, owner="dev", original_owner=None, actor="dev", at=AT)
    s1 = authz.apply(s0, r1)
    r2 = authz.grant(s1, account="partner", kind=GrantKind.PARTNER, actor="dev", at=AT)
    s2 = authz.apply(s1, r2)
    r3 = authz.revoke(s2, account="partner", kind=GrantKind.PARTNER, actor="dev", at=AT)
    folded = authz.fold("p1", [r3, r1, r2])
    assert not folded.may_unbind("partner")
    assert folded.seq == 3
    assert authz.apply(folded, r2) is folded  # an old record replayed
