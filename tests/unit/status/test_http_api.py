"""The HTTP routes over the views, with in-memory queries at the seam and the security kit in front: 401 for
a missing, unknown or revoked credential, 403 naming a missing permission, a key's product scope filtering
lists and hiding other products' devices (404), OIDC JWTs from a test issuer; then the API itself: 404 for an
unknown device, 400 for a cursor this API did not hand out (and nothing read), pages with a cursor only when
full."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from fleet_shared.security import (
    DEFAULT_ROLES,
    ApiKeys,
    ApiSecurity,
    JwtVerifier,
    ProductScope,
    RoleTable,
)
from fleet_shared.service.problems import install_problem_handlers
from fleet_status.entrypoints.http import api_router
from fleet_status.ports import Document
from fleet_status.settings import StatusSettings
from fleet_status.views import StatusViews
from tests.unit.security.fakes import FakeApiKeyStore, ManualClock
from tests.unit.security.issuer import AUDIENCE, LocalIssuer

pytestmark = pytest.mark.unit

PRODUCTS = {"d1": "p1", "d2": "p1", "d3": "p2"}
# a role without status:read, to see the 403
ROLES = RoleTable({**DEFAULT_ROLES, "pairer": frozenset({"pairing:read"})})


def doc(device_id: str) -> Document:
    return {
        "_id": device_id,
        "product_id": PRODUCTS[device_id],
        "version": 3,
        "dps": [{"code": "temp", "value": 21.5, "raw": 215, "t": 10, "dp_id": 2, "type": "Integer"}],
        "presence": {"online": True, "changed_at_ms": 5, "last_seen_ms": 10},
        "binding": {"state": "bound", "owner_uid": "u1", "home_id": "h1", "at_ms": 1},
        "name": {"name": "Hall", "at_ms": 1},
        "dp_names": [{"dp_id": 2, "name": "Temperature", "at_ms": 1}],
        "firmware": [{"channel": 9, "upgrade_status": 3, "at_ms": 1, "version": "1.2.0"}],
    }


class Shadows:
    def __init__(self) -> None:
        self.docs = {d: doc(d) for d in PRODUCTS}
        self.calls: list[dict[str, Any]] = []

    async def get(self, device_id: str) -> Document | None:
        return self.docs.get(device_id)

    async def list(
        self,
        *,
        product_id: str | None,
        home_id: str | None,
        online: bool | None,
        after: str | None,
        limit: int,
        products: frozenset[str] | None = None,
    ) -> list[Document]:
        self.calls.append({"after": after, "limit": limit, "product_id": product_id, "products": products})
        return [
            d
            for i, d in sorted(self.docs.items())
            if (after is None or i > after)
            and (product_id is None or d["product_id"] == product_id)
            and (products is None or d["product_id"] in products)
        ][:limit]


class Timelines:
    def __init__(self) -> None:
        self.rows = [
            {"_id": f"d1|temp|{t}", "code": "temp", "dp_id": 2, "value": t, "t": t} for t in (3, 2, 1)
        ]
        self.befores: list[tuple[int, str] | None] = []

    async def dp_history_page(
        self,
        device_id: str,
        code: str | None,
        *,
        since_ms: int,
        until_ms: int,
        before: tuple[int, str] | None,
        limit: int,
        now: datetime,
    ) -> list[Document]:
        self.befores.append(before)
        return [r for r in self.rows if before is None or int(r["t"]) < before[0]][:limit]

    async def presence_page(
        self,
        device_id: str,
        *,
        since_ms: int,
        until_ms: int,
        before: tuple[int, str] | None,
        limit: int,
        now: datetime,
    ) -> list[Document]:
        self.befores.append(before)
        return [{"_id": "d1|1|1", "online": True, "t": 1}][:limit]


@dataclass
class World:
    keys: ApiKeys
    issuer: LocalIssuer
    shadows: Shadows
    timelines: Timelines
    app: FastAPI
    timeouts: list[tuple[str, float | None]]  # what the inactivity route handed to the writer

    def client(self, credential: str | None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {credential}"} if credential else {}
        transport = httpx.ASGITransport(app=self.app)
        return httpx.AsyncClient(transport=transport, base_url="http://status", headers=headers)

    async def key(self, *roles: str, products: list[str] | None = None) -> str:
        scope = ProductScope.all() if products is None else ProductScope.only(products)
        _, plaintext = await self.keys.issue("test", list(roles), scope)
        return plaintext


@pytest.fixture(scope="module")
def issuer() -> LocalIssuer:
    issuer = LocalIssuer()
    issuer.add_key("rsa-1")
    return issuer


@pytest.fixture
async def world(issuer: LocalIssuer) -> AsyncIterator[World]:
    """The routes behind the kit as `create_app` puts them: the router's `status:read`, `install`; JWTs as
    status's settings configure them, the issuer's documents served through the test transport."""
    settings = StatusSettings(oidc_issuer=issuer.url, oidc_audience=AUDIENCE, oidc_algorithms=["RS256"])
    keys = ApiKeys(FakeApiKeyStore(), ROLES, ManualClock())
    shadows, timelines = Shadows(), Timelines()
    timeouts: list[tuple[str, float | None]] = []

    async def set_timeout(device_id: str, timeout_s: float | None) -> None:
        timeouts.append((device_id, timeout_s))

    async with httpx.AsyncClient(transport=issuer.transport()) as http:
        security = ApiSecurity(api_keys=keys, jwt=JwtVerifier.from_settings(settings, ROLES, http))
        app = FastAPI()
        install_problem_handlers(app)  # as build_app does
        app.include_router(
            api_router(StatusViews(shadows, timelines), security, set_inactivity_timeout=set_timeout)
        )
        security.install(app)
        yield World(keys, issuer, shadows, timelines, app, timeouts)


@pytest.fixture
def queries(world: World) -> tuple[Shadows, Timelines]:
    return world.shadows, world.timelines


@pytest.fixture
async def api(world: World) -> AsyncIterator[httpx.AsyncClient]:
    """A client holding a viewer key of every product, as the stack's seeded key is."""
    async with world.client(await world.key("viewer")) as client:
        yield client


def problem(response: httpx.Response) -> tuple[int, str]:
    assert response.headers["content-type"] == "application/problem+json"
    return response.status_code, response.json()["detail"]


ROUTES = ["/v1/devices/d1/shadow", "/v1/devices", "/v1/devices/d1/history", "/v1/devices/d1/presence"]


@pytest.mark.parametrize("path", ROUTES)
async def test_every_route_needs_a_known_unrevoked_credential(world: World, path: str) -> None:
    key, revoked = await world.keys.issue("old", ["viewer"])
    assert await world.keys.revoke(key.key_id)
    for credential, detail in [
        (None, "missing bearer credentials"),
        ("fk_unknown_0000", "invalid or expired credentials"),
        (revoked, "invalid or expired credentials"),
    ]:
        async with world.client(credential) as client:
            response = await client.get(path)
        assert problem(response) == (401, detail), credential
        assert response.headers["www-authenticate"] == "Bearer"
    assert (world.shadows.calls, world.timelines.befores) == ([], [])


@pytest.mark.parametrize("path", ROUTES)
async def test_a_credential_without_status_read_is_403_naming_it(world: World, path: str) -> None:
    async with world.client(await world.key("pairer")) as client:
        response = await client.get(path)
    assert problem(response) == (403, "missing permission status:read")
    assert (world.shadows.calls, world.timelines.befores) == ([], [])


async def test_a_product_scoped_key_lists_only_its_products(world: World) -> None:
    async with world.client(await world.key("viewer", products=["p2"])) as client:
        listed = (await client.get("/v1/devices")).json()
        assert [i["device_id"] for i in listed["items"]] == ["d3"]
        own = (await client.get("/v1/devices", params={"product_id": "p2"})).json()
        assert [i["device_id"] for i in own["items"]] == ["d3"]
        other = await client.get("/v1/devices", params={"product_id": "p1"})
    assert problem(other) == (403, "product p1 is outside this credential's product scope (status:read)")
    assert [c["products"] for c in world.shadows.calls] == [frozenset({"p2"})] * 2


@pytest.mark.parametrize("path", [p for p in ROUTES if p != "/v1/devices"])
async def test_a_device_of_another_product_is_404_like_an_unknown_one(world: World, path: str) -> None:
    async with world.client(await world.key("viewer", products=["p2"])) as client:
        other = await client.get(path)
        unknown = await client.get(path.replace("d1", "d9"))
        own = await client.get(path.replace("d1", "d3"))
    assert problem(other) == (404, "no shadow for device d1")
    assert problem(unknown) == (404, "no shadow for device d9")
    assert own.status_code == 200
    assert len(world.timelines.befores) == (0 if path.endswith("shadow") else 1)  # only d3's was read


async def test_a_key_scoped_to_several_products_sees_each(world: World) -> None:
    async with world.client(await world.key("viewer", products=["p1", "p2"])) as client:
        listed = (await client.get("/v1/devices")).json()
    assert [i["device_id"] for i in listed["items"]] == ["d1", "d2", "d3"]


async def test_a_jwt_from_the_issuer_is_accepted_with_its_roles_and_products(world: World) -> None:
    viewer_of_p1 = world.issuer.token("rsa-1", roles=["viewer"], fleet_products=["p1"])
    async with world.client(viewer_of_p1) as client:
        listed = (await client.get("/v1/devices")).json()
        shadow = await client.get("/v1/devices/d1/shadow")
        hidden = await client.get("/v1/devices/d3/shadow")
    assert [i["device_id"] for i in listed["items"]] == ["d1", "d2"]
    assert shadow.status_code == 200
    assert problem(hidden) == (404, "no shadow for device d3")

    by_scope = world.issuer.token("rsa-1", scope="status:read openid", fleet_products="*")
    no_permission = world.issuer.token("rsa-1", roles=["pairer"], fleet_products="*")
    wrong_audience = world.issuer.token("rsa-1", roles=["viewer"], fleet_products="*", aud="someone-else")
    async with world.client(by_scope) as client:
        assert (await client.get("/v1/devices/d3/shadow")).status_code == 200
    async with world.client(no_permission) as client:
        assert problem(await client.get("/v1/devices")) == (403, "missing permission status:read")
    async with world.client(wrong_audience) as client:
        assert problem(await client.get("/v1/devices"))[0] == 401


async def test_shadow_is_served_as_its_view_and_an_unknown_device_is_404(api: httpx.AsyncClient) -> None:
    found = await api.get("/v1/devices/d1/shadow")
    assert found.status_code == 200
    body = found.json()
    assert body["dps"]["temp"] == {
        "code": "temp",
        "dp_id": 2,
        "value": 21.5,
        "raw": 215,
        "type": "Integer",
        "flags": None,
        "device_time_ms": 10,
        "source": "device",
    }
    assert body["binding"] == {"state": "bound", "owner_uid": "u1", "home_id": "h1"}
    assert (body["name"], body["dp_names"], body["firmware"]["9"]["version"]) == (
        "Hall",
        {"2": "Temperature"},
        "1.2.0",
    )
    missing = await api.get("/v1/devices/d9/shadow")
    assert (missing.status_code, missing.json()["detail"]) == (404, "no shadow for device d9")


async def test_device_pages_follow_their_cursor(api: httpx.AsyncClient, queries: tuple[Shadows, Any]) -> None:
    first = (await api.get("/v1/devices", params={"limit": 2})).json()
    assert [i["device_id"] for i in first["items"]] == ["d1", "d2"]
    rest = (await api.get("/v1/devices", params={"limit": 2, "cursor": first["next_cursor"]})).json()
    assert [i["device_id"] for i in rest["items"]] == ["d3"]
    assert rest["next_cursor"] is None
    assert [c["after"] for c in queries[0].calls] == [None, "d2"]


@pytest.mark.parametrize(
    "path",
    ["/v1/devices", "/v1/devices/d1/history", "/v1/devices/d1/presence"],
)
@pytest.mark.parametrize("cursor", ["%%%", "bm90LWpzb24", "WzEsIDJd"])  # not base64, not JSON, [1, 2]
async def test_a_foreign_cursor_is_400_and_reads_nothing(
    api: httpx.AsyncClient, queries: tuple[Shadows, Timelines], path: str, cursor: str
) -> None:
    response = await api.get(path, params={"cursor": cursor})
    assert (response.status_code, response.json()["detail"]) == (400, "invalid cursor")
    assert (queries[0].calls, queries[1].befores) == ([], [])


async def test_history_pages_carry_a_time_cursor(
    api: httpx.AsyncClient, queries: tuple[Shadows, Timelines]
) -> None:
    first = (await api.get("/v1/devices/d1/history", params={"limit": 2})).json()
    assert [r["device_time_ms"] for r in first["items"]] == [3, 2]
    rest = (
        await api.get("/v1/devices/d1/history", params={"limit": 2, "cursor": first["next_cursor"]})
    ).json()
    assert [r["device_time_ms"] for r in rest["items"]] == [1]
    assert rest["next_cursor"] is None
    assert queries[1].befores == [None, (2, "d1|temp|2")]
    presence = (await api.get("/v1/devices/d1/presence")).json()
    assert presence == {"items": [{"online": True, "device_time_ms": 1}], "next_cursor": None}


async def test_a_device_inactivity_timeout_is_set_for_a_known_device_and_checked(world: World) -> None:
    async with world.client(await world.key("operator")) as api:
        ok = await api.put("/v1/devices/d1/inactivity-timeout", json={"timeout_s": 600})
        cleared = await api.put("/v1/devices/d1/inactivity-timeout", json={"timeout_s": None})
        negative = await api.put("/v1/devices/d1/inactivity-timeout", json={"timeout_s": -1})
        unknown = await api.put("/v1/devices/nope/inactivity-timeout", json={"timeout_s": 5})
    assert (ok.status_code, ok.json()) == (202, {"device_id": "d1", "timeout_s": 600})
    assert cleared.status_code == 202
    assert (negative.status_code, unknown.status_code) == (422, 404)
    assert world.timeouts == [("d1", 600), ("d1", None)]  # bad input changes nothing


async def test_setting_an_inactivity_timeout_needs_status_write_and_the_devices_product(world: World) -> None:
    async with world.client(await world.key("viewer")) as viewer:
        refused = await viewer.put("/v1/devices/d1/inactivity-timeout", json={"timeout_s": 60})
    async with world.client(await world.key("operator", products=["p2"])) as scoped:
        other = await scoped.put("/v1/devices/d1/inactivity-timeout", json={"timeout_s": 60})
        own = await scoped.put("/v1/devices/d3/inactivity-timeout", json={"timeout_s": 60})
    assert problem(refused) == (403, "missing permission status:write")
    assert other.status_code == 404  # another product's device is hidden, as on the read routes
    assert own.status_code == 202
    assert world.timeouts == [("d3", 60)]
