"""Errors as RFC 9457 problem details (`application/problem+json`), one shape for every service.

A 422 lists each invalid field by its path and pydantic's message, never the value sent: request bodies may
hold Wi-Fi passwords or access secrets, and an error body is logged and shown more widely than the request.

Nor does a problem echo the request's path as `instance`: a path can carry ids and credentials (tuya-sim
serves Tuya's `/v1.0/token/{refresh_token}`), and error bodies end up in clients' logs. RFC 9457 makes
`instance` optional, and the route's template would not do instead (`{device_id}` is not a URI reference);
the `X-Request-ID` header (and, for a 500, the detail) names the request for finding its log lines.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_JSON = "application/problem+json"

log = logging.getLogger(__name__)


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
        return problem(exc.status_code, detail, headers=exc.headers, **extensions)

    async def invalid_request(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        fields = invalid_fields(exc.errors())
        names = ", ".join(f["field"] for f in fields)
        return problem(422, f"invalid request: {names}", errors=fields)

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid_request)


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
