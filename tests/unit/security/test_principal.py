"""Principals: deny by default, grants by role (exact, `area:*`, `*`), product scope, and 403 wording."""

from __future__ import annotations

import pytest

from fleet_shared.security import (
    DEFAULT_ROLES,
    Permission,
    Principal,
    ProductScope,
    RoleTable,
    SecuritySettings,
)

pytestmark = pytest.mark.unit


def principal(*roles: str, scope: ProductScope | None = None, table: RoleTable | None = None) -> Principal:
    table = table or RoleTable()
    return Principal(
        subject="api-key:k1",
        display_name="k1",
        kind="api_key",
        roles=frozenset(roles),
        grants=table.grants(roles),
        scope=scope or ProductScope.all(),
    )


def test_nothing_is_allowed_without_a_role() -> None:
    nobody = principal()
    assert not nobody.can(Permission.STATUS_READ)
    assert nobody.refusal("status:read") == "missing permission status:read"


def test_a_role_grants_its_permissions_and_no_others() -> None:
    viewer = principal("viewer")
    assert viewer.can("status:read")
    assert viewer.can(Permission.OTA_READ, "p1")
    assert viewer.refusal("unbinding:execute", "p1") == "missing permission unbinding:execute for product p1"


def test_area_and_global_wildcards() -> None:
    table = RoleTable({"ota-owner": ["ota:*"], **DEFAULT_ROLES})
    owner = principal("ota-owner", table=table)
    assert owner.can("ota:release")
    assert owner.can("ota:anything-new")
    assert not owner.can("status:read")
    assert principal("admin").can("unbinding:admin", "any-product")


def test_product_scope_is_checked_when_the_call_names_a_product() -> None:
    scoped = principal("operator", scope=ProductScope.only({"p1", "p2"}))
    assert scoped.can("unbinding:execute", "p1")
    refusal = scoped.refusal("unbinding:execute", "p3")
    assert refusal is not None
    assert "product p3" in refusal
    assert scoped.can("unbinding:execute")  # no product named: the handler narrows by product_filter()
    assert scoped.product_filter() == frozenset({"p1", "p2"})
    assert principal("operator").product_filter() is None


def test_malformed_names_and_unknown_roles_are_refused() -> None:
    with pytest.raises(ValueError, match="area:action"):
        principal("admin").can("status")
    with pytest.raises(ValueError, match="malformed grants"):
        RoleTable({"bad": ["status:read", "stat us"]})
    with pytest.raises(ValueError, match="unknown roles"):
        RoleTable().check_roles(["viewer", "veiwer"])
    assert RoleTable().grants(["no-such-role"]) == frozenset()


def test_product_scope_documents_round_trip_and_reject_garbage() -> None:
    assert ProductScope.from_document(None) == ProductScope.all()
    assert ProductScope.from_document(["b", "a"]).to_document() == ["a", "b"]
    with pytest.raises(ValueError, match="product scope"):
        ProductScope.from_document("p1")


def test_the_role_table_is_overridden_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_SECURITY_ROLES", '{"reader": ["status:read"], "root": ["*"]}')
    monkeypatch.setenv("FLEET_API_KEY_DEFAULT_ROLE", "reader")
    settings = SecuritySettings()
    assert settings.security_roles is not None
    table = RoleTable(settings.security_roles)
    assert "viewer" not in table
    assert principal("reader", table=table).can("status:read")
    assert not principal("reader", table=table).can("ota:read")
    assert table.check_roles([settings.api_key_default_role]) == ("reader",)
