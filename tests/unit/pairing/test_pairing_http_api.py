"""pairing's HTTP routes over in-memory fakes of its ports, the security kit in front as `create_app` puts it:
opening a session in every mode (secrets in that one answer only), 422s naming the field and never the
Wi-Fi password, idempotency-key replays, Tuya's refusals, reading, listing with filters and cursor,
cancelling, token checks; 401 without a credential, 403 naming the missing permission, and nothing changed
by a refusal."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI

from fleet_contracts.pairing import PairingMode, PairingSessionEnded, PairingTokenIssued
from fleet_pairing.entrypoints.http import ApiPorts, api_router
from fleet_pairing.ports import ActivatedDevice, FailedDevice, TokenResult
from fleet_pairing.service_layer import handlers
from fleet_pairing.views import PairingViews, encode_cursor
from fleet_shared.qr import render
from fleet_shared.security import DEFAULT_ROLES, ApiKeys, ApiSecurity, RoleTable
from fleet_shared.service.problems import install_problem_handlers
from fleet_shared.tuya.errors import TuyaTransportError
from tests.unit.pairing.fakes import (
    T0,
    FakeBindingModes,
    FakeClock,
    FakeOwners,
    FakeSessions,
    FakeTuya,
    SequentialIds,
    events_of,
    tuya_error,
)
from tests.unit.security.fakes import FakeApiKeyStore, FakeAuditLog, ManualClock

pytestmark = pytest.mark.unit

PASSWORD = 'pä"ss\\wört 8+'  # a Wi-Fi password of quotes, a backslash and non-ASCII characters
SHORT_PASSWORD = "Kurz-7!"  # 7 bytes: one short of WPA's minimum
SSID = 'Werkstatt "Süd" ☕'
MAX_EXPECTED = 10  # the configured FLEET_PAIRING_MAX_EXPECTED_DEVICES
# a role with neither pairing permission, to see both 403s
ROLES = RoleTable({**DEFAULT_ROLES, "outsider": frozenset({"status:read"})})
SESSIONS = "/v1/pairing-sessions"


@dataclass
class World:
    keys: ApiKeys
    audit: FakeAuditLog
    sessions: FakeSessions
    tuya: FakeTuya
    clock: FakeClock
    app: FastAPI

    def client(self, credential: str | None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {credential}"} if credential else {}
        transport = httpx.ASGITransport(app=self.app)
        return httpx.AsyncClient(transport=transport, base_url="http://pairing", headers=headers)

    async def key(self, *roles: str) -> str:
        _, plaintext = await self.keys.issue("test", list(roles))
        return plaintext


@pytest.fixture
async def world() -> World:
    keys = ApiKeys(FakeApiKeyStore(), ROLES, ManualClock())
    audit = FakeAuditLog()
    security = ApiSecurity(api_keys=keys, audit=audit)
    sessions, tuya, clock = FakeSessions(), FakeTuya(), FakeClock()
    ports = ApiPorts(
        sessions=sessions,
        queries=PairingViews(sessions),
        tuya=tuya,
        clock=clock,
        ids=SequentialIds(),
        render_qr=render,
        default_lifetime=timedelta(minutes=10),
        max_expected_devices=MAX_EXPECTED,
    )
    app = FastAPI()
    install_problem_handlers(app)  # as build_app does
    app.include_router(api_router(ports, security))
    security.install(app)
    return World(keys, audit, sessions, tuya, clock, app)


@pytest.fixture
async def api(world: World) -> AsyncIterator[httpx.AsyncClient]:
    """An operator's key (pairing:read and pairing:write), as the stack's seeded key is."""
    async with world.client(await world.key("operator")) as client:
        yield client


def body(mode: str = "EZ", **fields: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"owner_uid": "u1", "home_id": "h1", "mode": mode, "time_zone_id": "Europe/Berlin"}
    if mode in ("BLE", "combo"):
        out["device_uuids"] = ["uuid-1"]
    if mode == "QR":
        out["wifi"] = {"ssid": SSID, "password": PASSWORD}
    return out | fields


def problem(response: httpx.Response) -> tuple[int, str]:
    assert response.headers["content-type"] == "application/problem+json"
    return response.status_code, response.json()["detail"]


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [k, *_strings(v)]]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def echoes(response: httpx.Response, secret: str) -> bool:
    """The secret anywhere in the answer: its raw text, or any string of its JSON once decoded (escaping
    would hide a quote or a backslash from a search of the raw text)."""
    decoded = _strings(response.json()) if response.content else []
    return secret in response.text or any(secret in s for s in decoded)


def unchanged(world: World) -> bool:
    return not world.sessions.rows and not world.tuya.calls and not world.sessions.events


# --- opening a session -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "uuid", "ble"),
    [
        ("EZ", None, False),
        ("AP", None, False),
        ("QR", None, False),
        ("BLE", "uuid-1", True),
        ("combo", "uuid-1", True),
    ],
)
async def test_open_in_each_mode_answers_the_secrets_once(
    world: World, api: httpx.AsyncClient, mode: str, uuid: str | None, ble: bool
) -> None:
    response = await api.post(SESSIONS, json=body(mode))
    assert response.status_code == 201, response.text
    answer = response.json()
    assembled = "AY" + "tok00001" + "sec1"  # region + token + secret, as FakeTuya issued them
    assert answer["replayed"] is False
    assert answer["assembled_token"] == assembled
    assert answer["ble_token"] == (assembled[2:10] if ble else None)
    session = answer["session"]
    assert (session["session_id"], session["state"], session["mode"]) == ("s1", "active", mode)
    assert (session["token"], session["region"]) == ("tok00001", "AY")  # the bare token, never the secret
    assert session["device_uuids"] == ([uuid] if uuid else [])
    assert session["expires_at"] == (T0 + timedelta(minutes=10)).isoformat().replace("+00:00", "Z")
    assert world.tuya.calls == [{"owner_uid": "u1", "home_id": "h1", "mode": PairingMode(mode), "uuid": uuid}]
    assert [type(e) for e in world.sessions.events] == [PairingTokenIssued]
    if mode == "QR":
        qr = answer["qr"]
        # the JSON a camera's firmware parses, quotes and non-ASCII characters intact
        assert orjson.loads(qr["payload"]) == {"s": SSID, "p": PASSWORD, "t": assembled}
        assert "<svg" in qr["svg"]
        assert base64.b64decode(qr["png_base64"]).startswith(b"\x89PNG")
    else:
        assert answer["qr"] is None
        assert not echoes(response, PASSWORD)


async def test_multi_device_ez_takes_n_up_to_the_configured_limit(
    world: World, api: httpx.AsyncClient
) -> None:
    response = await api.post(SESSIONS, json=body(expected_devices=MAX_EXPECTED))
    assert response.status_code == 201
    assert response.json()["session"]["expected_devices"] == MAX_EXPECTED


INVALID = [
    # (the body, the field the 422 names)
    ({"home_id": "h1", "mode": "EZ"}, "body.owner_uid"),
    (body(owner_uid=""), "body.owner_uid"),
    (body(mode="ZIGBEE"), "body.mode"),
    (body(expected_devices=0), "body.expected_devices"),
    (body(expected_devices=MAX_EXPECTED + 1), "body.expected_devices"),  # the configured limit
    (body("AP", expected_devices=2), "body.expected_devices"),  # one device per AP token
    (body("BLE", device_uuids=[]), "body.device_uuids"),
    (body("EZ", device_uuids=["uuid-1"]), "body.device_uuids"),
    (body(allowed_products=[]), "body.allowed_products"),
    (body(unexpected_policy="remove"), "body.unexpected_policy"),  # removal needs an allow-list
    (body(unexpected_policy="burn"), "body.unexpected_policy"),
    (body(colour="red"), "body.colour"),
    (body("QR", wifi=None), "body.wifi"),
    (body("EZ", wifi={"ssid": SSID, "password": PASSWORD}), "body.wifi"),
    (body("QR", wifi={"ssid": SSID}), "body.wifi.password"),
    (body("QR", wifi={"ssid": "x" * 33, "password": PASSWORD}), "body.wifi.ssid"),
    (body("QR", wifi={"ssid": "é" * 17, "password": PASSWORD}), "body.wifi.ssid"),  # 34 bytes of UTF-8
    (body("QR", wifi={"ssid": SSID, "password": SHORT_PASSWORD}), "body.wifi.password"),  # under 8 bytes
    (body("QR", wifi={"ssid": SSID, "password": PASSWORD * 5}), "body.wifi.password"),  # over 64
    (body("QR", wifi={"ssid": SSID, "password": PASSWORD + "\x00"}), "body.wifi.password"),
    (body("QR", wifi={"ssid": SSID, "password": PASSWORD, "hint": PASSWORD}), "body.wifi.hint"),
]


@pytest.mark.parametrize(("sent", "field"), INVALID)
async def test_a_bad_body_is_a_422_naming_the_field_and_changes_nothing(
    world: World, api: httpx.AsyncClient, sent: dict[str, Any], field: str
) -> None:
    response = await api.post(SESSIONS, json=sent)
    status, detail = problem(response)
    assert status == 422
    assert field in detail
    assert field in [e["field"] for e in response.json()["errors"]]
    # the password is never echoed, not in any message, nor as pydantic's `input`
    assert not echoes(response, PASSWORD)
    assert not echoes(response, SHORT_PASSWORD)
    assert unchanged(world)


async def test_a_body_that_is_not_json_is_a_422(world: World, api: httpx.AsyncClient) -> None:
    response = await api.post(
        SESSIONS, content=b'{"owner_uid": ', headers={"content-type": "application/json"}
    )
    assert problem(response)[0] == 422
    assert unchanged(world)


async def test_a_repeated_idempotency_key_replays_the_session_without_secrets(
    world: World, api: httpx.AsyncClient
) -> None:
    first = await api.post(SESSIONS, json=body("QR", idempotency_key="order-7"))
    again = await api.post(SESSIONS, json=body("QR", idempotency_key="order-7"))
    assert (first.status_code, again.status_code) == (201, 200)
    replay = again.json()
    assert replay["replayed"] is True
    assert (replay["assembled_token"], replay["ble_token"], replay["qr"]) == (None, None, None)
    assert replay["session"] == first.json()["session"]
    assert not echoes(again, PASSWORD)
    assert len(world.tuya.calls) == 1  # no second token from Tuya
    # keys are scoped per owner: another owner's same key opens its own session
    other = await api.post(SESSIONS, json=body("QR", owner_uid="u2", idempotency_key="order-7"))
    assert other.status_code == 201
    assert other.json()["session"]["session_id"] != first.json()["session"]["session_id"]
    assert len(world.sessions.rows) == 2


@pytest.mark.parametrize(
    ("error", "status", "detail"),
    [
        (tuya_error(1106), 422, "invalid request: body.owner_uid, body.home_id"),
        (tuya_error(1199), 503, "Tuya's rate limit for this project is reached; retry shortly"),
        (tuya_error(1109), 502, "Tuya refused the token: code 1109"),
        (
            TuyaTransportError("ConnectError on POST /v1.0/device/paring/token"),
            503,
            "Tuya's OpenAPI is unreachable",
        ),
    ],
)
async def test_tuya_refusing_the_token_opens_nothing(
    world: World, api: httpx.AsyncClient, error: Exception, status: int, detail: str
) -> None:
    world.tuya.create_errors.append(error)
    response = await api.post(SESSIONS, json=body("QR"))
    got_status, got_detail = problem(response)
    assert got_status == status
    assert got_detail.startswith(detail)
    assert not echoes(response, PASSWORD)
    assert not world.sessions.rows
    assert not world.sessions.events
    if status == 503 and "rate limit" in detail:
        assert response.headers["retry-after"] == "1"


# --- reading, listing, cancelling --------------------------------------------------------------------


async def test_get_shows_each_device_with_its_outcome(world: World, api: httpx.AsyncClient) -> None:
    opened = (await api.post(SESSIONS, json=body(expected_devices=2))).json()["session"]
    world.tuya.results[opened["token"]] = TokenResult(
        success=[ActivatedDevice("d1", "p1", "Plug")], failed=[FailedDevice(code="3", device_id="d2")]
    )
    world.clock.advance(seconds=30)
    await handlers.poll_token_result(
        opened["session_id"],
        sessions=world.sessions,
        tuya=world.tuya,
        owners=FakeOwners(),
        binding_modes=FakeBindingModes(),
        clock=world.clock,
    )
    response = await api.get(f"{SESSIONS}/{opened['session_id']}")
    assert response.status_code == 200
    view = response.json()
    assert view["state"] == "active"  # one of the two expected devices paired so far
    assert view["counts"] == {"paired": 1, "failed": 1, "unexpected_product": 0, "late": 0}
    devices = {d["key"]: d for d in view["devices"]}
    assert (devices["d1"]["outcome"], devices["d1"]["product_id"], devices["d1"]["source"]) == (
        "paired",
        "p1",
        "poll",
    )
    assert devices["d2"]["failure"]["code"] == "3"
    assert devices["d2"]["failure"]["cause"] == "wrong_wifi_password"
    assert problem(await api.get(f"{SESSIONS}/s404")) == (404, "no pairing session s404")


async def test_list_filters_and_pages_newest_first(world: World, api: httpx.AsyncClient) -> None:
    # s1-s6 an hour apart, alternating owners and homes; s6 opened on the next UTC day
    for i in range(6):
        world.clock.at = T0 + timedelta(hours=i * 2.5)
        owner, home = ("u1", "h1") if i % 2 == 0 else ("u2", "h2")
        assert (await api.post(SESSIONS, json=body(owner_uid=owner, home_id=home))).status_code == 201
    assert (await api.post(f"{SESSIONS}/s3/cancel")).status_code == 200

    async def ids(**params: Any) -> tuple[list[str], str | None]:
        response = await api.get(SESSIONS, params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        return [s["session_id"] for s in page["items"]], page["next_cursor"]

    seen, cursor = await ids(limit=4)
    assert seen == ["s6", "s5", "s4", "s3"]
    assert cursor is not None
    assert await ids(limit=4, cursor=cursor) == (["s2", "s1"], None)
    assert await ids(owner_uid="u1") == (["s5", "s3", "s1"], None)
    assert await ids(home_id="h2", limit=2) == (["s6", "s4"], encode_cursor(T0 + timedelta(hours=7.5), "s4"))
    assert await ids(state="cancelled") == (["s3"], None)
    assert await ids(state="active", owner_uid="u1") == (["s5", "s1"], None)
    assert await ids(day=T0.date().isoformat()) == (["s5", "s4", "s3", "s2", "s1"], None)
    assert await ids(day=(T0 + timedelta(days=1)).date().isoformat()) == (["s6"], None)
    assert await ids(owner_uid="nobody") == ([], None)


@pytest.mark.parametrize(
    ("params", "status", "field"),
    [
        ({"cursor": "not-a-cursor"}, 400, "cursor"),
        ({"cursor": base64.urlsafe_b64encode(b'["2026-11-29T12:00:00", "s1"]').decode()}, 400, "cursor"),
        ({"limit": 0}, 422, "query.limit"),
        ({"limit": 201}, 422, "query.limit"),
        ({"state": "paused"}, 422, "query.state"),
        ({"day": "29.11.2026"}, 422, "query.day"),
    ],
)
async def test_bad_listing_parameters_read_nothing(
    world: World, api: httpx.AsyncClient, params: dict[str, Any], status: int, field: str
) -> None:
    response = await api.get(SESSIONS, params=params)
    got_status, detail = problem(response)
    assert (got_status, field in detail) == (status, True)
    assert world.sessions.listings == []


async def test_cancel_ends_the_session_once_and_refuses_its_token(
    world: World, api: httpx.AsyncClient
) -> None:
    opened = (await api.post(SESSIONS, json=body())).json()["session"]
    sid, token = opened["session_id"], opened["token"]
    assert (await api.get(f"/v1/pairing-tokens/{token}")).json() == {
        "honoured": True,
        "session_id": sid,
        "reason": None,
        "detail": None,
    }
    first = await api.post(f"{SESSIONS}/{sid}/cancel")
    assert first.status_code == 200
    assert (first.json()["state"], first.json()["ended_at"]) == (
        "cancelled",
        T0.isoformat().replace("+00:00", "Z"),
    )
    again = await api.post(f"{SESSIONS}/{sid}/cancel")
    assert again.json() == first.json()  # idempotent: nothing more happens
    assert len(events_of(world.sessions, PairingSessionEnded)) == 1
    refused = await api.get(f"/v1/pairing-tokens/{token}")
    assert problem(refused)[0] == 409
    assert refused.json()["reason"] == "cancelled"
    assert problem(await api.post(f"{SESSIONS}/s404/cancel")) == (404, "no pairing session for id s404")
    assert problem(await api.get("/v1/pairing-tokens/unknown0")) == (404, "no pairing session for this token")


async def test_cancel_of_a_session_that_ended_otherwise_is_a_409(
    world: World, api: httpx.AsyncClient
) -> None:
    sid = (await api.post(SESSIONS, json=body())).json()["session"]["session_id"]
    world.clock.advance(minutes=11)
    closed = await handlers.close_expired_sessions(
        sessions=world.sessions, clock=world.clock, settle=timedelta(seconds=15)
    )
    assert closed == 1
    response = await api.post(f"{SESSIONS}/{sid}/cancel")
    assert problem(response) == (409, "the session already ended as expired")
    assert response.json()["state"] == "expired"
    token = world.sessions.rows[sid].token
    assert (await api.get(f"/v1/pairing-tokens/{token}")).json()["reason"] == "expired"


# --- authentication and permissions ------------------------------------------------------------------

ROUTES = [
    ("POST", SESSIONS, body()),
    ("GET", f"{SESSIONS}/s1", None),
    ("GET", SESSIONS, None),
    ("POST", f"{SESSIONS}/s1/cancel", None),
    ("GET", "/v1/pairing-tokens/tok00001", None),
]


@pytest.mark.parametrize(("method", "path", "sent"), ROUTES)
async def test_every_route_needs_a_known_unrevoked_credential(
    world: World, method: str, path: str, sent: dict[str, Any] | None
) -> None:
    key, revoked = await world.keys.issue("old", ["operator"])
    assert await world.keys.revoke(key.key_id)
    for credential, detail in [
        (None, "missing bearer credentials"),
        ("fk_unknown_0000", "invalid or expired credentials"),
        (revoked, "invalid or expired credentials"),
    ]:
        async with world.client(credential) as client:
            response = await client.request(method, path, json=sent)
        assert problem(response) == (401, detail), credential
        assert response.headers["www-authenticate"] == "Bearer"
    assert unchanged(world)


async def test_a_401_comes_before_a_422_and_echoes_nothing(world: World) -> None:
    async with world.client(None) as client:
        response = await client.post(
            SESSIONS, json=body("QR", wifi={"ssid": SSID, "password": SHORT_PASSWORD})
        )
    assert problem(response) == (401, "missing bearer credentials")
    assert not echoes(response, SHORT_PASSWORD)


@pytest.mark.parametrize(
    ("role", "method", "path", "sent", "missing"),
    [
        ("viewer", "POST", SESSIONS, body("QR"), "pairing:write"),
        ("viewer", "POST", f"{SESSIONS}/s1/cancel", None, "pairing:write"),
        ("outsider", "GET", f"{SESSIONS}/s1", None, "pairing:read"),
        ("outsider", "GET", SESSIONS, None, "pairing:read"),
        ("outsider", "GET", "/v1/pairing-tokens/tok00001", None, "pairing:read"),
        ("outsider", "POST", SESSIONS, body(), "pairing:write"),
    ],
)
async def test_a_missing_permission_is_a_403_naming_it_and_changes_nothing(
    world: World, role: str, method: str, path: str, sent: dict[str, Any] | None, missing: str
) -> None:
    async with world.client(await world.key(role)) as client:
        response = await client.request(method, path, json=sent)
    assert problem(response) == (403, f"missing permission {missing}")
    assert not echoes(response, PASSWORD)
    assert unchanged(world)


async def test_a_viewer_reads_and_every_write_is_audited_without_its_body(
    world: World, api: httpx.AsyncClient
) -> None:
    sid = (await api.post(SESSIONS, json=body("QR"))).json()["session"]["session_id"]
    async with world.client(await world.key("viewer")) as viewer:
        assert (await viewer.get(f"{SESSIONS}/{sid}")).status_code == 200
        assert (await viewer.get(SESSIONS)).status_code == 200
        assert (await viewer.post(f"{SESSIONS}/{sid}/cancel")).status_code == 403
    assert (await api.post(f"{SESSIONS}/{sid}/cancel")).status_code == 200
    audited = [(r.method, r.route, r.status, r.outcome) for r in world.audit.records]
    assert audited == [
        ("POST", SESSIONS, 201, "succeeded"),
        ("POST", f"{SESSIONS}/{{session_id}}/cancel", 403, "refused"),
        ("POST", f"{SESSIONS}/{{session_id}}/cancel", 200, "succeeded"),
    ]
    assert PASSWORD not in repr(world.audit.records)
