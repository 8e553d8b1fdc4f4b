"""Async Tuya OpenAPI client (REFERENCE §4-7).

- Signs every request (HMAC-SHA256, with nonce by default); token APIs are signed without access_token.
- Acquires the token (`GET /v1.0/token?grant_type=1`), refreshes it `refresh_margin` seconds before expiry
  with the single-use refresh token, re-acquires on 1010/1011 (retrying the failed call once: Tuya did not
  run it). One lock: concurrent callers wait for one refresh.
- Retries 1110/1111/1199, HTTP 5xx and network errors with exponential backoff and full jitter, only for
  idempotent calls (GET, or `idempotent=True`).
- A token bucket per API (method + path template) paces calls before Tuya's own limiter has to.
- Secrets never reach logs, spans, exception messages or reprs: logs and spans name the path template, not the
  path (the refresh token travels in the path); free text from Tuya or httpx goes through a `Redactor`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import orjson
from opentelemetry import propagate, trace
from pydantic import BaseModel, SecretStr, TypeAdapter, ValidationError

from fleet_shared.tracing.attributes import tag_span
from fleet_shared.tuya.errors import (
    TOKEN_REACQUIRE_CODES,
    TuyaApiError,
    TuyaClockSkewError,
    TuyaError,
    TuyaResponseError,
    TuyaTransportError,
    api_error,
)
from fleet_shared.tuya.models import (
    DeviceDetails,
    DeviceFunctions,
    DeviceLogPage,
    DeviceSpecification,
    DeviceStatusBatchItem,
    DpStatus,
    FirmwareInfo,
    ThingDetails,
    TokenInfo,
    UpgradeProgress,
)
from fleet_shared.tuya.ratelimit import RateLimit, RateLimiter
from fleet_shared.tuya.redaction import Redactor
from fleet_shared.tuya.regions import Region, region
from fleet_shared.tuya.signing import QueryValue, query_value, sign_request

__all__ = ["RetryPolicy", "TuyaOpenApiClient", "unwrap_response"]

_log = logging.getLogger("fleet_shared.tuya.openapi")
_tracer = trace.get_tracer("fleet_shared.tuya")

M = TypeVar("M", bound=BaseModel)

TOKEN_PATH = "/v1.0/token"  # noqa: S105 - a URL path, not a password
REFRESH_PATH = "/v1.0/token/{refresh_token}"
MAX_BATCH = 20

# Ids, tokens and channels only: no `/`, `?`, `#`, `%` or dot segments can be smuggled into a signed path.
_PATH_PARAM = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")

# Tuya's examples (REFERENCE §4): 4/s sending properties, 50/s querying, 10/s thing model; unknown for v1.0.
DEFAULT_RATE_LIMIT = RateLimit(rate=10.0, burst=10.0)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 4
    base_delay: float = 0.25
    max_delay: float = 8.0

    def delay(self, retry_number: int, rand: Callable[[], float]) -> float:
        """Full jitter: uniform in [0, min(max_delay, base_delay * 2^retry_number)]."""
        return float(rand() * min(self.max_delay, self.base_delay * (2**retry_number)))


@dataclass
class _TokenState:
    access_token: SecretStr
    refresh_token: SecretStr
    expires_at: float  # monotonic seconds
    uid: str | None

    def __repr__(self) -> str:
        return f"_TokenState(expires_at={self.expires_at:.0f}, uid={self.uid!r})"


def _code(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


_FUSION_KEYS = frozenset({"success", "error_code", "error_msg", "result", "code", "msg", "t", "tid"})


def _is_fusion_result(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and isinstance(value.get("success"), bool)
        and set(value) <= _FUSION_KEYS
        and bool(set(value) & {"result", "error_code", "error_msg", "code"})
    )


def unwrap_response(
    body: Mapping[str, Any], *, http_status: int | None = None, redact: Callable[[str], str] = str
) -> Any:
    """The `result` of a Tuya response, flat (`success/result/code/msg/tid`) or a nested FusionResult
    (`success/error_code/error_msg/result`); raises the typed `TuyaApiError` on failure."""
    tid = body.get("tid") if isinstance(body.get("tid"), str) else None
    if body.get("success") is True:
        result = body.get("result")
        if isinstance(result, dict) and _is_fusion_result(result):
            return unwrap_response({**result, "tid": tid}, http_status=http_status, redact=redact)
        return result
    code = _code(body.get("code", body.get("error_code")))
    msg = body.get("msg", body.get("error_msg"))
    if not isinstance(msg, str):
        msg = "response without success flag" if "success" not in body else ""
    raise api_error(code, redact(msg), tid, http_status=http_status)


class TuyaOpenApiClient:
    """One Tuya cloud project. Use as `async with TuyaOpenApiClient(...) as client:` or call `aclose()`."""

    def __init__(
        self,
        access_id: str,
        access_secret: str | SecretStr,
        *,
        region_code: str | Region = "eu",
        base_url: str | None = None,
        http: httpx.AsyncClient | None = None,
        timeout: float = 10.0,
        lang: str = "en",
        use_nonce: bool = True,
        refresh_margin: float = 60.0,
        retry: RetryPolicy | None = None,
        rate_limits: Mapping[str, RateLimit] | None = None,
        default_rate_limit: RateLimit | None = DEFAULT_RATE_LIMIT,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        secret = access_secret.get_secret_value() if isinstance(access_secret, SecretStr) else access_secret
        if not access_id or not secret:
            raise ValueError("access_id and access_secret are required")
        self.access_id = access_id
        self._secret = SecretStr(secret)
        self.region = region_code if isinstance(region_code, Region) else region(region_code)
        self.base_url = (base_url or self.region.openapi_base_url).rstrip("/")
        self._own_http = http is None
        self._http = http or httpx.AsyncClient(timeout=timeout)
        self.lang = lang
        self.use_nonce = use_nonce
        self.refresh_margin = refresh_margin
        self.retry = retry or RetryPolicy()
        self._limiter = RateLimiter(rate_limits, default=default_rate_limit, clock=monotonic, sleep=sleep)
        self._clock = clock
        self._monotonic = monotonic
        self._sleep = sleep
        self._rand = rand
        self.redactor = Redactor([secret])
        self._token: _TokenState | None = None
        self._token_lock = asyncio.Lock()
        self._clock_offset_ms = 0
        self.token_acquisitions = 0
        self.token_refreshes = 0

    def __repr__(self) -> str:
        return f"TuyaOpenApiClient(access_id={self.access_id!r}, base_url={self.base_url!r})"

    async def __aenter__(self) -> TuyaOpenApiClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()

    # -- tokens ---------------------------------------------------------------------------------------

    def _token_fresh(self, state: _TokenState | None) -> bool:
        return state is not None and self._monotonic() < state.expires_at - self.refresh_margin

    def _store_token(self, info: TokenInfo) -> None:
        old = self._token
        if old is not None:
            self.redactor.discard(old.access_token.get_secret_value())
            self.redactor.discard(old.refresh_token.get_secret_value())
        self.redactor.add(info.access_token.get_secret_value())
        self.redactor.add(info.refresh_token.get_secret_value())
        self._token = _TokenState(
            access_token=info.access_token,
            refresh_token=info.refresh_token,
            expires_at=self._monotonic() + info.expire_time,
            uid=info.uid,
        )

    async def _acquire_token(self) -> None:
        result = await self._call("GET", TOKEN_PATH, query={"grant_type": 1}, auth=False, idempotent=True)
        self._store_token(_validate(TokenInfo, result, "token"))
        self.token_acquisitions += 1

    async def _refresh_token(self, state: _TokenState) -> None:
        # Not idempotent: the refresh token is single-use, a blind retry would only fail with 1011/1012.
        result = await self._call(
            "GET",
            REFRESH_PATH,
            path_params={"refresh_token": state.refresh_token.get_secret_value()},
            auth=False,
            idempotent=False,
        )
        self._store_token(_validate(TokenInfo, result, "token"))
        self.token_refreshes += 1

    async def access_token(self) -> str:
        """A valid access token: acquired or refreshed as needed, once for all concurrent callers."""
        state = self._token
        if state is not None and self._token_fresh(state):
            return state.access_token.get_secret_value()
        async with self._token_lock:
            state = self._token
            if state is None:
                await self._acquire_token()
            elif not self._token_fresh(state):
                try:
                    await self._refresh_token(state)
                except TuyaError as exc:
                    _log.info("tuya token refresh failed (%s); acquiring a new token", type(exc).__name__)
                    self._token = None
                    await self._acquire_token()
            assert self._token is not None
            return self._token.access_token.get_secret_value()

    def _invalidate_token(self, rejected: str) -> None:
        # Only the token Tuya rejected: a concurrent caller may already have replaced it.
        if self._token is not None and self._token.access_token.get_secret_value() == rejected:
            self._token = None

    # -- core call ------------------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path_template: str,
        *,
        path_params: Mapping[str, str | int] | None = None,
        query: Mapping[str, QueryValue | Sequence[str] | None] | None = None,
        body: Any = None,
        idempotent: bool | None = None,
    ) -> Any:
        """One authenticated call; returns `result`. `idempotent` defaults to True for GET only."""
        return await self._call(
            method, path_template, path_params=path_params, query=query, body=body, idempotent=idempotent
        )

    async def _call(
        self,
        method: str,
        path_template: str,
        *,
        path_params: Mapping[str, str | int] | None = None,
        query: Mapping[str, QueryValue | Sequence[str] | None] | None = None,
        body: Any = None,
        idempotent: bool | None = None,
        auth: bool = True,
    ) -> Any:
        method = method.upper()
        if idempotent is None:
            idempotent = method == "GET"
        path = _render_path(path_template, path_params or {})
        pairs = _query_pairs(query)
        body_bytes = b"" if body is None else orjson.dumps(body)
        retries = 0
        token_retried = skew_retried = False
        # HTTP client conventions; the path template, never the path (a refresh token travels in it)
        with _tracer.start_as_current_span(
            f"{method} {path_template}", kind=trace.SpanKind.CLIENT, attributes=self._span_attributes(method)
        ) as span:
            span.set_attribute("url.template", path_template)
            tag_span(span, device_id=str((path_params or {}).get("device_id") or "") or None)
            while True:
                await self._limiter.acquire(method, path_template)
                token = await self.access_token() if auth else ""
                try:
                    result = await self._send(method, path_template, path, pairs, body_bytes, token)
                except TuyaApiError as exc:
                    span.set_attribute("tuya.code", exc.code if exc.code is not None else -1)
                    if auth and exc.code in TOKEN_REACQUIRE_CODES and not token_retried:
                        token_retried = True
                        self._invalidate_token(token)
                        continue
                    if isinstance(exc, TuyaClockSkewError) and not skew_retried:
                        skew_retried = True
                        continue
                    if exc.retryable and idempotent and retries + 1 < self.retry.max_attempts:
                        await self._sleep(self.retry.delay(retries, self._rand))
                        retries += 1
                        continue
                    span.set_status(trace.StatusCode.ERROR, type(exc).__name__)
                    raise
                except TuyaTransportError as exc:
                    if exc.http_status is not None:
                        span.set_attribute("http.response.status_code", exc.http_status)
                    if exc.retryable and idempotent and retries + 1 < self.retry.max_attempts:
                        await self._sleep(self.retry.delay(retries, self._rand))
                        retries += 1
                        continue
                    span.set_status(trace.StatusCode.ERROR, type(exc).__name__)
                    span.set_attribute("error.type", type(exc).__name__)
                    raise
                span.set_attribute("tuya.retries", retries)
                return result

    def _span_attributes(self, method: str) -> dict[str, str | int]:
        url = httpx.URL(self.base_url)
        attributes: dict[str, str | int] = {"http.request.method": method, "server.address": url.host}
        if url.port is not None:
            attributes["server.port"] = url.port
        return attributes

    async def _send(
        self,
        method: str,
        path_template: str,
        path: str,
        pairs: list[tuple[str, str]],
        body: bytes,
        access_token: str,
    ) -> Any:
        t = int(self._clock() * 1000) + self._clock_offset_ms
        nonce = uuid.uuid4().hex if self.use_nonce else ""
        signed = sign_request(
            client_id=self.access_id,
            secret=self._secret.get_secret_value(),
            t=t,
            method=method,
            path=path,
            query=pairs,
            body=body,
            access_token=access_token,
            nonce=nonce,
        )
        headers = signed.headers()
        headers["lang"] = self.lang
        propagate.inject(headers)  # traceparent: the cloud's side of the call joins the caller's trace
        if body:
            headers["Content-Type"] = "application/json"
        started = time.perf_counter()
        try:
            response = await self._http.request(
                method,
                self.base_url + path,
                params=tuple(pairs),
                content=body or None,
                headers=headers,
            )
        except httpx.HTTPError as exc:
            # The exception text may contain the URL (and so a refresh token): name its type only.
            _log.warning("tuya %s %s transport error %s", method, path_template, type(exc).__name__)
            raise TuyaTransportError(f"{type(exc).__name__} on {method} {path_template}") from None
        elapsed_ms = (time.perf_counter() - started) * 1000
        status = response.status_code
        try:
            payload = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            payload = None
        if status >= 500 or not isinstance(payload, dict):
            _log.warning("tuya %s %s HTTP %s (%.0f ms)", method, path_template, status, elapsed_ms)
            raise TuyaTransportError(
                f"HTTP {status} {'without a JSON envelope ' if payload is None else ''}"
                f"on {method} {path_template}",
                http_status=status,
            )
        try:
            result = unwrap_response(payload, http_status=status, redact=self.redactor.redact)
        except TuyaApiError as exc:
            if isinstance(exc, TuyaClockSkewError):
                self._adjust_clock(payload.get("t"), t)
            _log.warning(
                "tuya %s %s failed: code=%s tid=%s (%.0f ms)",
                method,
                path_template,
                exc.code,
                exc.tid,
                elapsed_ms,
            )
            raise
        _log.debug("tuya %s %s ok tid=%s (%.0f ms)", method, path_template, payload.get("tid"), elapsed_ms)
        return result

    def _adjust_clock(self, server_t: Any, sent_t: int) -> None:
        if isinstance(server_t, int) and not isinstance(server_t, bool):
            self._clock_offset_ms += server_t - sent_t
            _log.warning("tuya rejected our clock (1013); offset now %d ms", self._clock_offset_ms)

    # -- typed API ------------------------------------------------------------------------------------

    async def get_device(self, device_id: str) -> DeviceDetails:
        """`GET /v1.0/devices/{device_id}` (v1.0 shape: `online`, `status`, `uid`)."""
        result = await self._call("GET", "/v1.0/devices/{device_id}", path_params={"device_id": device_id})
        return _validate(DeviceDetails, result, "device")

    async def get_thing(self, device_id: str) -> ThingDetails:
        """`GET /v2.0/cloud/thing/{device_id}` (v2.0 shape: `is_online`, no status)."""
        result = await self._call(
            "GET", "/v2.0/cloud/thing/{device_id}", path_params={"device_id": device_id}
        )
        return _validate(ThingDetails, result, "thing")

    async def get_things(self, device_ids: Sequence[str]) -> list[ThingDetails]:
        """`GET /v2.0/cloud/thing/batch?device_ids=` (at most 20)."""
        ids = _batch_ids(device_ids)
        result = await self._call("GET", "/v2.0/cloud/thing/batch", query={"device_ids": ids})
        return _validate_list(ThingDetails, result, "things")

    async def list_user_devices(self, uid: str) -> list[DeviceDetails]:
        """`GET /v1.0/users/{uid}/devices`: the devices of one app user."""
        result = await self._call("GET", "/v1.0/users/{uid}/devices", path_params={"uid": uid})
        return _validate_list(DeviceDetails, result, "devices")

    async def get_device_status(self, device_id: str) -> list[DpStatus]:
        """`GET /v1.0/devices/{device_id}/status`."""
        result = await self._call(
            "GET", "/v1.0/devices/{device_id}/status", path_params={"device_id": device_id}
        )
        return _validate_list(DpStatus, result, "status")

    async def get_devices_status(self, device_ids: Sequence[str]) -> list[DeviceStatusBatchItem]:
        """`GET /v1.0/iot-03/devices/status?device_ids=` (at most 20)."""
        ids = _batch_ids(device_ids)
        result = await self._call("GET", "/v1.0/iot-03/devices/status", query={"device_ids": ids})
        return _validate_list(DeviceStatusBatchItem, result, "status batch")

    async def get_specifications(self, device_id: str, *, version: str = "v1.0") -> DeviceSpecification:
        """`GET /{v1.0|v1.1}/devices/{device_id}/specifications` (v1.1 adds dp ids)."""
        if version not in ("v1.0", "v1.1"):
            raise ValueError("version must be v1.0 or v1.1")
        result = await self._call(
            "GET", f"/{version}/devices/{{device_id}}/specifications", path_params={"device_id": device_id}
        )
        return _validate(DeviceSpecification, result, "specifications")

    async def get_functions(self, device_id: str) -> DeviceFunctions:
        """`GET /v1.0/devices/{device_id}/functions`."""
        result = await self._call(
            "GET", "/v1.0/devices/{device_id}/functions", path_params={"device_id": device_id}
        )
        return _validate(DeviceFunctions, result, "functions")

    async def get_device_logs(
        self,
        device_id: str,
        *,
        types: Sequence[int],
        start_time: int,
        end_time: int,
        codes: Sequence[str] | None = None,
        size: int | None = None,
        query_type: int | None = None,
        start_row_key: str | None = None,
    ) -> DeviceLogPage:
        """`GET /v1.0/devices/{device_id}/logs` (times in ms; types 1 online ... 10 timer)."""
        query: dict[str, QueryValue | Sequence[str] | None] = {
            "type": ",".join(str(t) for t in types),
            "start_time": start_time,
            "end_time": end_time,
            "codes": ",".join(codes) if codes else None,
            "size": size,
            "query_type": query_type,
            "start_row_key": start_row_key,
        }
        result = await self._call(
            "GET", "/v1.0/devices/{device_id}/logs", path_params={"device_id": device_id}, query=query
        )
        return _validate(DeviceLogPage, result, "logs")

    async def remove_device(self, device_id: str, *, legacy: bool = False) -> bool:
        """Unbinds the device: `DELETE /v2.0/cloud/thing/{id}` (legacy: `DELETE /v1.0/devices/{id}`)."""
        template = "/v1.0/devices/{device_id}" if legacy else "/v2.0/cloud/thing/{device_id}"
        result = await self._call("DELETE", template, path_params={"device_id": device_id})
        return result is True

    async def factory_reset_device(self, device_id: str, *, legacy: bool = False) -> bool:
        """Unbind + factory reset: `POST /v2.0/cloud/thing/{id}/reset` (legacy: `PUT .../reset-factory`)."""
        if legacy:
            result = await self._call(
                "PUT", "/v1.0/devices/{device_id}/reset-factory", path_params={"device_id": device_id}
            )
        else:
            result = await self._call(
                "POST", "/v2.0/cloud/thing/{device_id}/reset", path_params={"device_id": device_id}
            )
        return result is True

    async def get_firmware(self, device_id: str) -> list[FirmwareInfo]:
        """`GET /v2.0/cloud/thing/{device_id}/firmware`: one entry per upgrade channel."""
        result = await self._call(
            "GET", "/v2.0/cloud/thing/{device_id}/firmware", path_params={"device_id": device_id}
        )
        return _validate_list(FirmwareInfo, result, "firmware")

    async def confirm_upgrade(self, device_id: str, channel: int) -> bool:
        """`POST /v2.0/cloud/thing/{device_id}/firmware/{channel}`: confirm and start the update."""
        result = await self._call(
            "POST",
            "/v2.0/cloud/thing/{device_id}/firmware/{channel}",
            path_params={"device_id": device_id, "channel": int(channel)},
        )
        return result is True

    async def get_upgrade_progress(self, device_id: str, channel: int) -> UpgradeProgress:
        """`GET /v2.0/cloud/thing/{device_id}/firmware/{channel}/progress`."""
        result = await self._call(
            "GET",
            "/v2.0/cloud/thing/{device_id}/firmware/{channel}/progress",
            path_params={"device_id": device_id, "channel": int(channel)},
        )
        return _validate(UpgradeProgress, result, "upgrade progress")


# -- helpers ------------------------------------------------------------------------------------------


def _render_path(template: str, params: Mapping[str, str | int]) -> str:
    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in params:
            raise ValueError(f"missing path parameter {name!r}")
        value = str(params[name])
        if not _PATH_PARAM.fullmatch(value) or ".." in value:
            raise ValueError(f"invalid value for path parameter {name!r}")
        return value

    return _PLACEHOLDER.sub(substitute, template)


def _query_pairs(query: Mapping[str, QueryValue | Sequence[str] | None] | None) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for key, value in (query or {}).items():
        if value is None:
            continue
        if isinstance(value, str | int | float | bool):
            pairs.append((key, query_value(value)))
        else:
            pairs.append((key, ",".join(str(v) for v in value)))
    return pairs


def _batch_ids(device_ids: Sequence[str]) -> str:
    if isinstance(device_ids, str):
        device_ids = [device_ids]
    if not 0 < len(device_ids) <= MAX_BATCH:
        raise ValueError(f"between 1 and {MAX_BATCH} device ids per call")
    for device_id in device_ids:
        if not _PATH_PARAM.fullmatch(device_id):
            raise ValueError("invalid device id")
    return ",".join(device_ids)


def _validate(model: type[M], result: Any, what: str) -> M:
    try:
        return model.model_validate(result)
    except ValidationError as exc:
        raise TuyaResponseError(f"unexpected {what} result shape: {_summary(exc)}") from None


def _validate_list(model: type[M], result: Any, what: str) -> list[M]:
    if isinstance(result, dict):
        # Some list APIs wrap the items (`{"list": [...]}` / `{"devices": [...]}`).
        for key in ("list", "devices", "items"):
            if isinstance(result.get(key), list):
                result = result[key]
                break
    try:
        return TypeAdapter(list[model]).validate_python(result)  # type: ignore[valid-type]
    except ValidationError as exc:
        raise TuyaResponseError(f"unexpected {what} result shape: {_summary(exc)}") from None


def _summary(exc: ValidationError) -> str:
    # Locations and types only: input values could be secrets (local_key, token secret).
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '<root>'}:{e['type']}" for e in exc.errors()[:5]
    )
