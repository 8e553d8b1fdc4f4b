"""The OpenAPI front door, in the order Tuya's cloud answers: client id (1005), request time (1013),
signature (1004, checked by fleet_shared.tuya.signing), access token (1010/1011), rate (1199)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from fleet_shared.tuya.signing import verify_request
from fleet_tuya_sim.domain.project import (
    CLIENT_ID_INVALID,
    REQUEST_TIME_INVALID,
    SIGN_INVALID,
    AccessRefused,
    Grant,
    ProjectAccess,
)


@dataclass(frozen=True)
class Caller:
    access_id: str
    grant: Grant | None  # None on the token APIs


class OpenApiGate:
    def __init__(
        self, access: ProjectAccess, project_secrets: Mapping[str, str], now_ms: Callable[[], int]
    ) -> None:
        self.access = access
        self._secrets = dict(project_secrets)
        self._now_ms = now_ms

    def __repr__(self) -> str:
        return f"OpenApiGate(projects={sorted(self._secrets)})"

    def secret_of(self, access_id: str) -> str | None:
        return self._secrets.get(access_id)

    def check(
        self,
        *,
        method: str,
        path: str,
        query: Sequence[tuple[str, str]],
        headers: Mapping[str, str],
        body: bytes,
        token_api: bool,
    ) -> Caller:
        lower = {k.lower(): v for k, v in headers.items()}
        access_id = lower.get("client_id", "")
        secret = self._secrets.get(access_id)
        if secret is None:
            raise AccessRefused(CLIENT_ID_INVALID, "clientId is invalid")
        now = self._now_ms()
        try:
            t = int(lower.get("t", ""))
        except ValueError:
            raise AccessRefused(REQUEST_TIME_INVALID, "request time is invalid") from None
        self.access.check_time(t, now)
        check = verify_request(
            method=method, path=path, query=query, headers=headers, body=body, secret=secret
        )
        if not check.ok:
            raise AccessRefused(SIGN_INVALID, "sign invalid")
        grant = None if token_api else self.access.authorize(access_id, check.access_token, now)
        self.access.check_rate(access_id, now)
        return Caller(access_id, grant)
