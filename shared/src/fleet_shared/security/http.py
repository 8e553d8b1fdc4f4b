"""FastAPI integration: authenticate the bearer credential, authorize by permission and product, audit writes.

Adoption in a service, in its HTTP wiring (works in modules with postponed annotations and inside factories):

    security.install(app)  # problem+json answers and the audit middleware
    @router.post("/products/{product_id}/unbindings",
                 dependencies=[Depends(security.require("unbinding:execute", product_from="product_id"))])
    async def unbind(product_id: str, principal: CurrentPrincipal) -> ...: ...

or, for a whole router, `APIRouter(dependencies=[Depends(security.require("status:read"))])`.

Answers: 401 with `WWW-Authenticate: Bearer` for a missing, unknown, revoked, expired or unverifiable
credential (the body never says which; the log does, without the credential); 403 naming the missing
permission or product. Both are `application/problem+json`.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from opentelemetry import trace
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fleet_shared.clock import utcnow

from .api_keys import ApiKeys, AuthenticationError, Clock
from .audit import AuditLog, AuditRecord, outcome_of
from .oidc import JwtVerifier
from .principal import Principal, check_permission_name

log = logging.getLogger(__name__)

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
PROBLEM_JSON = "application/problem+json"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_bearer = HTTPBearer(auto_error=False, description="An API key (`fk_...`) or a JWT from the OIDC issuer.")

ProductFrom = str | Callable[[Request], str | None] | None


class SecurityProblem(HTTPException):
    title = "Error"

    def problem(self) -> JSONResponse:
        body = {
            "type": "about:blank",
            "title": self.title,
            "status": self.status_code,
            "detail": self.detail,
        }
        return JSONResponse(body, status_code=self.status_code, headers=self.headers, media_type=PROBLEM_JSON)


class Unauthorized(SecurityProblem):
    title = "Unauthorized"

    def __init__(self, detail: str = "invalid or expired credentials") -> None:
        super().__init__(401, detail, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(SecurityProblem):
    title = "Forbidden"

    def __init__(self, detail: str) -> None:
        super().__init__(403, detail)


def check(principal: Principal, permission: str, product_id: str | None = None) -> None:
    """Raise Forbidden unless the principal may do this; for handlers that learn the product after loading."""
    refusal = principal.refusal(permission, product_id)
    if refusal is not None:
        log.info("refused %s: %s", principal.subject, refusal)
        raise Forbidden(refusal)


def _looks_like_jwt(token: str) -> bool:
    return token.startswith("eyJ") and token.count(".") == 2


class ApiSecurity:
    def __init__(
        self,
        *,
        api_keys: ApiKeys | None = None,
        jwt: JwtVerifier | None = None,
        audit: AuditLog | None = None,
        clock: Clock = utcnow,
    ) -> None:
        self.api_keys = api_keys
        self.jwt = jwt
        self.audit = audit
        self.clock = clock

    def install(self, app: FastAPI) -> None:
        """Render refusals as problem+json; with an audit log, audit every state-changing call."""

        async def problem(_: Request, exc: Exception) -> JSONResponse:
            assert isinstance(exc, SecurityProblem)
            return exc.problem()

        app.add_exception_handler(SecurityProblem, problem)
        if self.audit is not None:
            app.add_middleware(AuditMiddleware, audit=self.audit, clock=self.clock)

    async def authenticate(self, token: str | None) -> Principal:
        if not token:
            raise Unauthorized("missing bearer credentials")
        try:
            if self.jwt is not None and _looks_like_jwt(token):
                return await self.jwt.verify(token)
            if self.api_keys is not None:
                return await self.api_keys.authenticate(token)
            raise AuthenticationError("no authenticator accepts this kind of credential")
        except AuthenticationError as e:
            log.info("authentication failed: %s", e)
            raise Unauthorized() from None

    def require(
        self, permission: str, *, product_from: ProductFrom = None
    ) -> Callable[..., Awaitable[Principal]]:
        """A dependency giving the authenticated principal, refusing unless it holds `permission` (for the
        product named by the path or query parameter `product_from`, or returned by it when callable). A
        request naming no product is checked for the permission alone: the handler then narrows by
        `principal.product_filter()` or calls `check` once it knows the product."""
        check_permission_name(permission)  # a typo fails when the route is declared, not when it is called

        async def dependency(
            request: Request,
            credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        ) -> Principal:
            # a router's `require` and its route's both run: the credential is verified once per request
            principal = getattr(request.state, "principal", None)
            if not isinstance(principal, Principal):
                bearer = credentials is not None and credentials.scheme.lower() == "bearer"
                principal = await self.authenticate(
                    credentials.credentials if credentials and bearer else None
                )
                request.state.principal = principal
            check(principal, permission, _product(request, product_from))
            return principal

        return dependency


def current_principal(request: Request) -> Principal:
    """The principal a `require` dependency of this route (or its router) authenticated."""
    principal = getattr(request.state, "principal", None)
    if not isinstance(principal, Principal):  # a route without `require`: deny by default
        raise Unauthorized("missing bearer credentials")
    return principal


# A module-level alias, so FastAPI can resolve it from a postponed (string) annotation.
CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def _product(request: Request, product_from: ProductFrom) -> str | None:
    if product_from is None:
        return None
    if callable(product_from):
        return product_from(request)
    value = request.path_params.get(product_from) or request.query_params.get(product_from)
    return str(value) if value else None


class AuditMiddleware:
    """Appends an audit record for every POST/PUT/PATCH/DELETE once its status is known, before the answer
    leaves: refusals (401/403) and failures included. Bodies are never read."""

    def __init__(self, app: ASGIApp, *, audit: AuditLog, clock: Clock = utcnow) -> None:
        self.app = app
        self.audit = audit
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in STATE_CHANGING:
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})  # shared with Request.state in the route
        request_id = _request_id(scope)
        recorded = False

        async def send_after_audit(message: Message) -> None:
            nonlocal recorded
            if message["type"] == "http.response.start" and not recorded:
                recorded = True
                await self._record(scope, state, request_id, int(message["status"]))
                message = {
                    **message,
                    "headers": [*message.get("headers", []), (b"x-request-id", request_id.encode())],
                }
            await send(message)

        try:
            await self.app(scope, receive, send_after_audit)
        except BaseException:
            if not recorded:
                recorded = True
                await self._record(scope, state, request_id, 500)
            raise

    async def _record(self, scope: Scope, state: dict[str, Any], request_id: str, status: int) -> None:
        principal = state.get("principal")
        route = scope.get("route")
        span = trace.get_current_span().get_span_context()
        record = AuditRecord(
            record_id=uuid.uuid4().hex,
            at=self.clock(),
            subject=principal.subject if isinstance(principal, Principal) else "anonymous",
            subject_kind=principal.kind if isinstance(principal, Principal) else "anonymous",
            display_name=principal.display_name if isinstance(principal, Principal) else None,
            method=scope["method"],
            route=str(getattr(route, "path", None) or "(no route)"),
            action=str(getattr(route, "name", None) or "(no route)"),
            targets={k: str(v)[:200] for k, v in (scope.get("path_params") or {}).items()},
            status=status,
            outcome=outcome_of(status),
            request_id=request_id,
            trace_id=format(span.trace_id, "032x") if span.is_valid else None,
        )
        try:
            await self.audit.append(record)
        except Exception:  # the call has happened; losing its record is logged loudly, not hidden
            log.exception(
                "audit record %s for %s %s could not be stored", request_id, record.method, record.route
            )


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            text = bytes(value).decode("latin-1")
            if _REQUEST_ID.match(text):
                return text
    return uuid.uuid4().hex
