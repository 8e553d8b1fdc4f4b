"""The kit in a FastAPI app: 401/403 problem bodies, product scope from the path, and the audit trail.

Routes are declared inside a factory in a module with postponed annotations, as services declare them: the
check goes in the route's `dependencies`, the handler takes `CurrentPrincipal`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI

from fleet_shared.security import (
    ApiKeys,
    ApiSecurity,
    CurrentPrincipal,
    Jwks,
    JwtVerifier,
    ProductScope,
    RoleTable,
    check,
)
from tests.unit.security.fakes import FakeApiKeyStore, FakeAuditLog, ManualClock
from tests.unit.security.issuer import AUDIENCE, LocalIssuer

pytestmark = pytest.mark.unit

FIRMWARE_PRODUCTS = {"fw-1": "p1", "fw-2": "p2"}


class World:
    def __init__(self, issuer: LocalIssuer, http: httpx.AsyncClient) -> None:
        self.clock = ManualClock()
        self.keys = ApiKeys(FakeApiKeyStore(), RoleTable(), self.clock)
        self.audit = FakeAuditLog()
        verifier = JwtVerifier(
            Jwks(http, issuer=issuer.url),
            RoleTable(),
            issuer=issuer.url,
            audience=AUDIENCE,
            algorithms=["RS256"],
        )
        self.security = ApiSecurity(api_keys=self.keys, jwt=verifier, audit=self.audit, clock=self.clock)
        self.app = self._app()

    def _app(self) -> FastAPI:
        app = FastAPI()
        security = self.security
        security.install(app)

        @app.get("/v1/devices/{device_id}", dependencies=[Depends(security.require("status:read"))])
        async def get_device(device_id: str, principal: CurrentPrincipal) -> dict[str, str]:
            return {"device_id": device_id, "seen_by": principal.subject}

        @app.post(
            "/v1/products/{product_id}/unbindings",
            status_code=201,
            dependencies=[Depends(security.require("unbinding:execute", product_from="product_id"))],
        )
        async def unbind_devices(product_id: str, body: dict[str, str]) -> dict[str, str]:
            return {"product_id": product_id}

        @app.post(
            "/v1/firmware/{firmware_id}/release", dependencies=[Depends(security.require("ota:release"))]
        )
        async def release_firmware(firmware_id: str, principal: CurrentPrincipal) -> dict[str, str]:
            check(principal, "ota:release", FIRMWARE_PRODUCTS[firmware_id])  # known only after loading
            return {"released": firmware_id}

        @app.delete("/v1/broken", dependencies=[Depends(security.require("status:read"))])
        async def broken() -> None:
            raise RuntimeError("a bug")

        admin = APIRouter(prefix="/v1/admin", dependencies=[Depends(security.require("status:read"))])

        @admin.put("/quotas/{product_id}", dependencies=[Depends(security.require("unbinding:admin"))])
        async def set_quota(product_id: str, principal: CurrentPrincipal) -> dict[str, str]:
            return {"set_by": principal.display_name}

        app.include_router(admin)

        @app.get("/v1/forgot-to-require")
        async def forgot(principal: CurrentPrincipal) -> dict[str, str]:
            return {"subject": principal.subject}

        return app


@pytest.fixture(scope="module")
def issuer() -> LocalIssuer:
    issuer = LocalIssuer()
    issuer.add_key("rsa-1")
    return issuer


@pytest.fixture
async def world(issuer: LocalIssuer) -> AsyncIterator[World]:
    async with httpx.AsyncClient(transport=issuer.transport()) as http:
        yield World(issuer, http)


@pytest.fixture
async def client(world: World) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=world.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_unauthorized(response: httpx.Response, detail: str = "invalid or expired credentials") -> None:
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json() == {
        "type": "about:blank",
        "title": "Unauthorized",
        "status": 401,
        "detail": detail,
    }


async def test_missing_unknown_revoked_and_expired_credentials_all_get_the_same_401(
    world: World, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    assert_unauthorized(await client.get("/v1/devices/d1"), "missing bearer credentials")
    assert_unauthorized(
        await client.get("/v1/devices/d1", headers={"Authorization": "Basic eDp5"}),
        "missing bearer credentials",
    )
    caplog.set_level(logging.INFO, logger="fleet_shared.security")
    assert_unauthorized(await client.get("/v1/devices/d1", headers=bearer("fk_unknown_secret-part")))
    revoked, revoked_secret = await world.keys.issue("old", ["viewer"])
    await world.keys.revoke(revoked.key_id)
    assert_unauthorized(await client.get("/v1/devices/d1", headers=bearer(revoked_secret)))
    _, expiring = await world.keys.issue(
        "temp", ["viewer"], expires_at=world.clock.now + timedelta(minutes=1)
    )
    assert (await client.get("/v1/devices/d1", headers=bearer(expiring))).status_code == 200
    world.clock.advance(60)
    assert_unauthorized(await client.get("/v1/devices/d1", headers=bearer(expiring)))

    logged = caplog.text
    assert "unknown API key" in logged
    assert f"API key {revoked.key_id} was revoked" in logged
    assert "expired" in logged
    for secret in ("fk_unknown_secret-part", revoked_secret, expiring):
        assert secret not in logged


async def test_a_role_without_the_permission_gets_a_403_naming_it(
    world: World, client: httpx.AsyncClient
) -> None:
    _, viewer = await world.keys.issue("viewer", ["viewer"])
    assert (
        (await client.get("/v1/devices/d1", headers=bearer(viewer))).json()["seen_by"].startswith("api-key:")
    )
    response = await client.post("/v1/products/p1/unbindings", json={}, headers=bearer(viewer))
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json() == {
        "type": "about:blank",
        "title": "Forbidden",
        "status": 403,
        "detail": "missing permission unbinding:execute for product p1",
    }


async def test_a_key_scoped_to_another_product_gets_a_403_naming_the_product(
    world: World, client: httpx.AsyncClient
) -> None:
    _, key = await world.keys.issue("p2-ops", ["operator", "firmware"], ProductScope.only({"p2"}))
    assert (await client.post("/v1/products/p2/unbindings", json={}, headers=bearer(key))).status_code == 201
    response = await client.post("/v1/products/p1/unbindings", json={}, headers=bearer(key))
    assert response.status_code == 403
    assert "product p1" in response.json()["detail"]
    assert (await client.post("/v1/firmware/fw-2/release", headers=bearer(key))).status_code == 200
    late = await client.post("/v1/firmware/fw-1/release", headers=bearer(key))
    assert late.status_code == 403
    assert "product p1" in late.json()["detail"]


async def test_jwt_bearer_tokens_pass_through_the_same_door(
    issuer: LocalIssuer, client: httpx.AsyncClient
) -> None:
    token = issuer.token("rsa-1", roles=["operator"], fleet_products=["p1"])
    assert (
        await client.post("/v1/products/p1/unbindings", json={}, headers=bearer(token))
    ).status_code == 201
    expired = issuer.token("rsa-1", roles=["operator"], fleet_products=["p1"], exp=int(time.time()) - 3600)
    assert_unauthorized(await client.post("/v1/products/p1/unbindings", json={}, headers=bearer(expired)))
    wrong_audience = issuer.token("rsa-1", roles=["operator"], aud="someone-else")
    assert_unauthorized(await client.get("/v1/devices/d1", headers=bearer(wrong_audience)))


async def test_every_state_changing_call_is_audited_without_its_body_and_reads_are_not(
    world: World, client: httpx.AsyncClient
) -> None:
    key, operator = await world.keys.issue("ops", ["operator"])
    _, viewer = await world.keys.issue("viewer", ["viewer"])
    await client.get("/v1/devices/d1", headers=bearer(operator))
    assert world.audit.records == []

    body = {"ssid": "home", "password": "wifi-password-123"}
    ok = await client.post(
        "/v1/products/p1/unbindings", json=body, headers={**bearer(operator), "X-Request-ID": "req-42"}
    )
    assert ok.status_code == 201
    assert ok.headers["x-request-id"] == "req-42"
    refused = await client.post("/v1/products/p1/unbindings", json=body, headers=bearer(viewer))
    anonymous = await client.post("/v1/products/p1/unbindings", json=body)
    failed = await client.delete("/v1/broken", headers=bearer(operator))
    assert (refused.status_code, anonymous.status_code, failed.status_code) == (403, 401, 500)

    first, second, third, fourth = world.audit.records
    assert first.subject == f"api-key:{key.key_id}"
    assert first.subject_kind == "api_key"
    assert first.display_name == "ops"
    assert (first.method, first.route, first.action) == (
        "POST",
        "/v1/products/{product_id}/unbindings",
        "unbind_devices",
    )
    assert first.targets == {"product_id": "p1"}
    assert (first.status, first.outcome, first.request_id, first.at) == (
        201,
        "succeeded",
        "req-42",
        world.clock.now,
    )
    assert (second.display_name, second.status, second.outcome) == ("viewer", 403, "refused")
    assert (third.subject, third.subject_kind, third.status) == ("anonymous", "anonymous", 401)
    assert (fourth.action, fourth.status, fourth.outcome) == ("broken", 500, "failed")
    assert all("wifi-password-123" not in repr(r) for r in world.audit.records)


async def test_a_route_that_forgot_to_require_a_permission_denies_everyone(
    world: World, client: httpx.AsyncClient
) -> None:
    _, admin = await world.keys.issue("admin", ["admin"])
    assert_unauthorized(
        await client.get("/v1/forgot-to-require", headers=bearer(admin)), "missing bearer credentials"
    )


async def test_an_audit_store_outage_is_logged_and_the_answer_still_leaves(
    world: World, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    world.audit.down = True
    _, operator = await world.keys.issue("ops", ["operator"])
    response = await client.post("/v1/products/p1/unbindings", json={}, headers=bearer(operator))
    assert response.status_code == 201
    assert "could not be stored" in caplog.text


async def test_a_router_wide_and_a_route_requirement_both_apply(
    world: World, client: httpx.AsyncClient
) -> None:
    _, operator = await world.keys.issue("ops", ["operator"])
    _, admin = await world.keys.issue("root", ["admin"])
    refused = await client.put("/v1/admin/quotas/p1", headers=bearer(operator))
    assert refused.status_code == 403
    assert refused.json()["detail"] == "missing permission unbinding:admin"
    allowed = await client.put("/v1/admin/quotas/p1", headers=bearer(admin))
    assert allowed.json() == {"set_by": "root"}
    assert [r.status for r in world.audit.records] == [403, 200]
    assert world.audit.records[1].route == "/v1/admin/quotas/{product_id}"
