"""The HTTP routes over the views, with in-memory queries at the seam: bearer API keys, 404 for an unknown
device, 400 for a cursor this API did not hand out (and nothing read), pages with a cursor only when full."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from fleet_status.entrypoints.http import api_router
from fleet_status.ports import Document
from fleet_status.views import StatusViews

pytestmark = pytest.mark.unit

KEY = "k-1"


def doc(device_id: str) -> Document:
    return {
        "_id": device_id,
        "product_id": "p1",
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
        self.docs = {d: doc(d) for d in ("d1", "d2", "d3")}
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
    ) -> list[Document]:
        self.calls.append({"after": after, "limit": limit})
        return [d for i, d in sorted(self.docs.items()) if after is None or i > after][:limit]


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


class Keys:
    async def add(self, name: str, key: str, now: datetime) -> bool:
        return False

    async def name_of(self, key: str) -> str | None:
        return "ops" if key == KEY else None


@pytest.fixture
def queries() -> tuple[Shadows, Timelines]:
    return Shadows(), Timelines()


@pytest.fixture
async def api(queries: tuple[Shadows, Timelines]) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.include_router(api_router(StatusViews(*queries), Keys()))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://status",
        headers={"Authorization": f"Bearer {KEY}"},
    ) as client:
        yield client


async def test_requests_need_a_known_bearer_key(api: httpx.AsyncClient) -> None:
    missing = await api.get("/v1/devices/d1/shadow", headers={"Authorization": ""})
    unknown = await api.get("/v1/devices/d1/shadow", headers={"Authorization": "Bearer nope"})
    assert (missing.status_code, missing.json()["detail"]) == (401, "missing bearer API key")
    assert (unknown.status_code, unknown.json()["detail"]) == (401, "unknown API key")


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


async def test_a_device_inactivity_timeout_is_set_for_a_known_device_and_checked(
    queries: tuple[Shadows, Timelines],
) -> None:
    calls: list[tuple[str, float | None]] = []

    async def set_timeout(device_id: str, timeout_s: float | None) -> None:
        calls.append((device_id, timeout_s))

    app = FastAPI()
    app.include_router(api_router(StatusViews(*queries), Keys(), set_inactivity_timeout=set_timeout))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://status",
        headers={"Authorization": f"Bearer {KEY}"},
    ) as api:
        ok = await api.put("/v1/devices/d1/inactivity-timeout", json={"timeout_s": 600})
        cleared = await api.put("/v1/devices/d1/inactivity-timeout", json={"timeout_s": None})
        negative = await api.put("/v1/devices/d1/inactivity-timeout", json={"timeout_s": -1})
        unknown = await api.put("/v1/devices/nope/inactivity-timeout", json={"timeout_s": 5})
    assert (ok.status_code, ok.json()) == (202, {"device_id": "d1", "timeout_s": 600})
    assert cleared.status_code == 202
    assert (negative.status_code, unknown.status_code) == (422, 404)
    assert calls == [("d1", 600), ("d1", None)]  # bad input changes nothing
