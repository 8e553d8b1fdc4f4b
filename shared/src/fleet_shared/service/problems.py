"""Errors as RFC 9457 problem details (`application/problem+json`), one shape for every service.

A 422 lists each invalid field by its path and pydantic's message, never the value sent: request bodies may
hold Wi-Fi passwords or access secrets, and an error body is logged and shown more widely than the request.

Nor does a problem echo the request's path as `instance`: a path can carry ids and credentials (tuya-sim
serves Tuya's `/v1.0/token/{refresh_token}`), and error bodies end up in clients' logs. RFC 9457 makes
`instance` optional, and the route's template would not do instead (`{device_id}` is not a URI reference);
the `X-Request-ID` header (and, for a 500, the detail) names the request for finding its log lines.

A route turns the domain's refusals into answers with one `DomainErrors` per service, so every route of it
answers an error alike and no route maps exceptions by hand:

    ERRORS = DomainErrors(
        Answer(NotFound, 404),
        Answer((CatalogError, ReleaseError), 409),
        Answer(TokenRefused, 409, extensions=lambda e: {"reason": e.reason}),
    )
    with ERRORS:
        return await handlers.withdraw_firmware(firmware_id, ports)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from types import TracebackType
from typing import Any, Generic, TypeVar

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_JSON = "application/problem+json"

log = logging.getLogger(__name__)

E = TypeVar("E", bound=Exception)


def problem(
    status: int,
    detail: str | None = None,
    *,
    instance: str | None = None,
    headers: Mapping[str, str] | None = None,
    **extensions: Any,
) -> JSONResponse:
    """A problem+json response; `type` stays `about:blank`, so `title` is the status's own phrase."""
    body: dict[str, Any] = {"type": "about:blank", "title": _title(status), "status": status}
    if detail:
        body["detail"] = detail
    if instance:
        body["instance"] = instance
    body.update(extensions)
    return JSONResponse(
        body, status_code=status, headers=dict(headers) if headers else None, media_type=PROBLEM_JSON
    )


def invalid_fields(errors: Sequence[Any]) -> list[dict[str, str]]:
    """pydantic's errors as `{field, message, type}`: `input` and `ctx` (which may echo the value) dropped."""
    fields = []
    for error in errors:
        location = [str(part) for part in error.get("loc", ())]
        fields.append(
            {
                "field": ".".join(location) or "request",
                "message": str(error.get("msg", "invalid")),
                "type": str(error.get("type", "value_error")),
            }
        )
    return fields


def unexpected_error(request_id: str | None) -> JSONResponse:
    """The 500 for a bug: says nothing of the internals, names the request id to find its log line."""
    where = f" (request id {request_id})" if request_id else ""
    return problem(500, f"an unexpected error; the service's logs have the details{where}")


def install_problem_handlers(app: FastAPI) -> None:
    """problem+json for HTTP errors and invalid requests (unhandled errors: see `RequestContextMiddleware`).

    A service may still register its own handler for one of these afterwards (tuya-sim answers Tuya's
    envelope on Tuya's paths): the later registration wins.
    """

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        detail = exc.detail if isinstance(exc.detail, str) else None
        extensions: dict[str, Any] = (
            {} if detail is not None or exc.detail is None else {"errors": exc.detail}
        )
        if isinstance(exc, ProblemError):
            extensions.update(exc.extensions)
        return problem(exc.status_code, detail, headers=exc.headers, **extensions)

    async def invalid_request(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        fields = invalid_fields(exc.errors())
        names = ", ".join(f["field"] for f in fields)
        return problem(422, f"invalid request: {names}", errors=fields)

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid_request)


class ProblemError(HTTPException):
    """An HTTP error whose problem carries members of its own (`{"reason": "expired"}`) beside the detail;
    `install_problem_handlers` answers it like any HTTPException, with them."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
        extensions: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(status, detail, headers=dict(headers) if headers else None)
        self.extensions: dict[str, Any] = dict(extensions or {})


@dataclass(frozen=True)
class Answer(Generic[E]):
    """How routes answer one kind of domain error: the status, fixed headers (`Retry-After`), the detail
    (the error's own message unless told) and extension members taken from the error."""

    errors: type[E] | tuple[type[E], ...]
    status: int
    headers: Mapping[str, str] | None = None
    detail: Callable[[E], str] = str
    extensions: Callable[[E], Mapping[str, Any]] | None = None

    def problem(self, error: E) -> ProblemError:
        extensions = self.extensions(error) if self.extensions is not None else None
        return ProblemError(self.status, self.detail(error), headers=self.headers, extensions=extensions)


class DomainErrors:
    """`with errors:` answers a domain error raised inside with the first `Answer` that lists its type (a
    problem+json, its cause the error); any other exception passes through untouched. Stateless: one per
    service, used by every route."""

    def __init__(self, *answers: Answer[Any]) -> None:
        self.answers = answers

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not isinstance(error, Exception):
            return
        for answer in self.answers:
            if isinstance(error, answer.errors):
                raise answer.problem(error) from error


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
