"""HTTP API: pairing sessions (open, read, list, cancel) and token checks, behind the security kit.

Routes parse, call a handler or a view, and answer. The Wi-Fi password is accepted only to build the QR
payload: it is a `SecretStr` from parsing on, and no error names its value (422s list fields, not inputs).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from fleet_contracts.pairing import PairingMode, PairingSessionState, UnexpectedProductPolicy
from fleet_pairing import views
from fleet_pairing.domain.commands import CancelSession, CheckToken, OpenSession
from fleet_pairing.domain.credentials import InvalidCredentials, WifiCredentials
from fleet_pairing.domain.session import (
    InvalidSession,
    SessionAlreadyEnded,
    SessionRequest,
    TokenRefused,
)
from fleet_pairing.ports import Clock, IdGenerator, SessionRepository, TuyaPairing
from fleet_pairing.service_layer import handlers
from fleet_shared.qr import QrImages
from fleet_shared.security import ApiSecurity, CurrentPrincipal, Permission
from fleet_shared.service import Answer, DomainErrors, problem
from fleet_shared.tuya.errors import TuyaApiError, TuyaError

RATE_LIMITED = 1199  # Tuya's "request frequency too high" (per project)
PERMISSION_DENY = 1106  # Tuya's "permission deny": unknown user, or a home that is not theirs
SessionId = Annotated[str, Path(min_length=1, max_length=64, description="The session id (`ps_...`).")]
Uid = Annotated[str, Field(min_length=1, max_length=64)]

# a refusal says why: the session's state, the token's reason
DOMAIN_ERRORS = DomainErrors(
    Answer(handlers.SessionNotFound, status.HTTP_404_NOT_FOUND),
    Answer(views.InvalidCursor, status.HTTP_400_BAD_REQUEST),
    Answer(SessionAlreadyEnded, status.HTTP_409_CONFLICT, extensions=lambda e: {"state": e.state.value}),
    Answer(TokenRefused, status.HTTP_409_CONFLICT, extensions=lambda e: {"reason": e.reason}),
    Answer(handlers.WriteContention, status.HTTP_503_SERVICE_UNAVAILABLE),
)


@dataclass(frozen=True)
class ApiPorts:
    """What the routes use: the handlers' ports, the read side and the configured limit on N."""

    sessions: SessionRepository
    queries: views.PairingViews
    tuya: TuyaPairing
    clock: Clock
    ids: IdGenerator
    render_qr: Callable[[SecretStr], QrImages]
    default_lifetime: timedelta
    max_expected_devices: int


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WifiBody(_Body):
    ssid: str = Field(min_length=1, max_length=32, description="The network the device joins (QR mode).")
    password: SecretStr = Field(max_length=64, description="Used for the QR payload only; never stored.")


class OpenSessionBody(_Body):
    owner_uid: Uid = Field(description="The account (Tuya uid) the devices are bound to.")
    home_id: Uid = Field(description="The owner's home the devices join.")
    mode: PairingMode
    time_zone_id: str = Field("Etc/UTC", min_length=1, max_length=64, description="e.g. `Europe/Berlin`.")
    expected_devices: int = Field(1, ge=1, le=1000, description="Multi-device EZ: devices expected (N).")
    device_uuids: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=1, description="BLE / combo: the device's uuid."
    )
    allowed_products: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = Field(
        None, max_length=1000, description="Only these product ids may join; others are `unexpected_product`."
    )
    unexpected_policy: UnexpectedProductPolicy = UnexpectedProductPolicy.RECORD_ONLY
    idempotency_key: str | None = Field(None, min_length=1, max_length=128)
    wifi: WifiBody | None = Field(None, description="QR mode only: builds the payload, never kept.")


class QrView(BaseModel):
    payload: str = Field(description='`{"s": ssid, "p": password, "t": assembled token}` (compact JSON).')
    svg: str
    png_base64: str


class OpenedSessionView(BaseModel):
    session: views.SessionView
    replayed: bool = Field(description="True: the idempotency key was used before; no secrets are returned.")
    assembled_token: str | None = Field(description="region + token + secret, for the device (EZ/AP/QR).")
    ble_token: str | None = Field(description="BLE / combo: the 8 characters the BLE SDK takes.")
    qr: QrView | None = None


class TokenCheckView(BaseModel):
    honoured: bool
    session_id: str | None = None
    reason: str | None = Field(None, description="`expired`, `used_up` or `cancelled` when refused.")
    detail: str | None = None


def _invalid(field: str, message: str) -> JSONResponse:
    where = f"body.{field}"
    return problem(
        422,
        f"invalid request: {where}",
        errors=[{"field": where, "message": message, "type": "value_error"}],
    )


def _request(body: OpenSessionBody) -> OpenSession:
    """The command; `InvalidSession` / `InvalidCredentials` name the field."""
    request = SessionRequest(
        owner_uid=body.owner_uid,
        home_id=body.home_id,
        mode=body.mode,
        time_zone_id=body.time_zone_id,
        expected_devices=body.expected_devices,
        device_uuids=tuple(body.device_uuids),
        allowed_products=frozenset(body.allowed_products) if body.allowed_products is not None else None,
        unexpected_policy=body.unexpected_policy,
        idempotency_key=body.idempotency_key,
    )
    wifi = WifiCredentials(body.wifi.ssid, body.wifi.password) if body.wifi is not None else None
    return OpenSession(request, wifi)


def _tuya_failed(e: TuyaError) -> JSONResponse:
    if isinstance(e, TuyaApiError) and e.code == PERMISSION_DENY:
        # Tuya knows no such user, or the home is not theirs: the caller's input, not an outage
        return problem(
            422,
            f"invalid request: body.owner_uid, body.home_id (Tuya: {e.msg})",
            errors=[
                {"field": f"body.{name}", "message": f"Tuya refused: {e.msg}", "type": "tuya_refused"}
                for name in ("owner_uid", "home_id")
            ],
            tuya_code=e.code,
        )
    if isinstance(e, TuyaApiError) and e.code == RATE_LIMITED:
        return problem(
            503, "Tuya's rate limit for this project is reached; retry shortly", headers={"Retry-After": "1"}
        )
    if isinstance(e, TuyaApiError):
        return problem(502, f"Tuya refused the token: code {e.code}: {e.msg}", tuya_code=e.code)
    return problem(503, "Tuya's OpenAPI is unreachable; retry")


def api_router(api: ApiPorts, sec: ApiSecurity) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["pairing"])
    read = [Depends(sec.require(Permission.PAIRING_READ))]
    write = [Depends(sec.require(Permission.PAIRING_WRITE))]
    ports: dict[str, Any] = {"sessions": api.sessions, "clock": api.clock}

    @router.post(
        "/pairing-sessions",
        dependencies=write,
        status_code=status.HTTP_201_CREATED,
        response_model=OpenedSessionView,
        responses={200: {"description": "A replayed idempotency key: the stored session, no secrets."}},
    )
    async def open_session(body: OpenSessionBody, principal: CurrentPrincipal) -> Any:
        """Get a Tuya token for the owner's home and open a session; the secrets are in this answer only."""
        limit = api.max_expected_devices
        if body.expected_devices > limit:
            return _invalid("expected_devices", f"at most {limit} devices per session (configured)")
        try:
            command = _request(body)
        except InvalidSession as e:
            return _invalid(e.field, e.problem)
        except InvalidCredentials as e:  # the Wi-Fi's own fields
            return _invalid(f"wifi.{e.field}", e.problem)
        try:
            opened = await handlers.open_session(
                command,
                sessions=api.sessions,
                tuya=api.tuya,
                clock=api.clock,
                ids=api.ids,
                default_lifetime=api.default_lifetime,
            )
        except InvalidCredentials as e:
            return problem(502, f"Tuya's token is unusable: {e.problem}")
        except TuyaError as e:
            return _tuya_failed(e)
        qr = None
        if opened.qr_payload is not None:
            images = api.render_qr(opened.qr_payload)
            qr = QrView(
                payload=opened.qr_payload.get_secret_value(),
                svg=images.svg,
                png_base64=base64.b64encode(images.png).decode("ascii"),
            )
        answer = OpenedSessionView(
            session=views.session_view(opened.session),
            replayed=opened.replayed,
            assembled_token=opened.assembled_token.get_secret_value() if opened.assembled_token else None,
            ble_token=opened.ble_token.get_secret_value() if opened.ble_token else None,
            qr=qr,
        )
        code = status.HTTP_200_OK if opened.replayed else status.HTTP_201_CREATED
        return JSONResponse(answer.model_dump(mode="json"), status_code=code)

    @router.get("/pairing-sessions/{session_id}", dependencies=read, response_model=views.SessionView)
    async def get_session(session_id: SessionId) -> Any:
        """The session: state, every device with its outcome (Tuya's code and cause for failures), timings."""
        view = await api.queries.session(session_id)
        if view is None:
            return problem(404, f"no pairing session {session_id}")
        return view

    @router.get("/pairing-sessions", dependencies=read, response_model=views.SessionPage)
    async def list_sessions(
        owner_uid: Annotated[str | None, Query(max_length=64)] = None,
        home_id: Annotated[str | None, Query(max_length=64)] = None,
        state: PairingSessionState | None = None,
        day: Annotated[date | None, Query(description="UTC day the session was opened.")] = None,
        cursor: Annotated[str | None, Query(max_length=512)] = None,
        limit: Annotated[int, Query(ge=1, le=views.MAX_PAGE)] = 50,
    ) -> Any:
        """Sessions newest first, by owner, home, state and day; `next_cursor` pages on."""
        with DOMAIN_ERRORS:
            return await api.queries.page(
                owner_uid=owner_uid,
                home_id=home_id,
                state=state,
                day=day,
                cursor=cursor,
                limit=limit,
            )

    @router.post(
        "/pairing-sessions/{session_id}/cancel", dependencies=write, response_model=views.SessionView
    )
    async def cancel_session(session_id: SessionId, principal: CurrentPrincipal) -> Any:
        """Tuya's stopConfig: the token is no longer honoured; later activations are flagged `late`."""
        with DOMAIN_ERRORS:
            done = await handlers.cancel_session(CancelSession(session_id), **ports)
        return views.session_view(done)

    @router.get("/pairing-tokens/{token}", dependencies=read, response_model=TokenCheckView)
    async def check_token(
        token: Annotated[str, Path(min_length=1, max_length=64, description="Tuya's bare token.")],
    ) -> Any:
        """Is this token still honoured (e.g. before a custom provisioner hands it to a device)? 404 if no
        session has it; 409 with the reason (`expired`, `used_up`, `cancelled`) if refused."""
        with DOMAIN_ERRORS:
            session = await handlers.check_token(CheckToken(token), **ports)
        return TokenCheckView(honoured=True, session_id=session.session_id)

    return router
