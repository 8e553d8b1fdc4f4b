"""The OpenAPI front door, in the order Tuya's cloud answers: client id (1005), request time (1013),
signature (1004, checked by fleet_shared.tuya.signing), access token (1002 missing, 1010/1011), rate (1199).

Signed headers (`Signature-Headers`) come in two layouts from Tuya's own SDKs: the Java/Go connectors join the
`name:value` lines with `\n`, tinytuya ends every line with `\n`. Tuya's cloud takes both (tinytuya signs
`Content-type` on every POST and works against it), so the gate does too.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from fleet_shared.tuya.signing import canonical_url, compute_sign, verify_request
from fleet_tuya_sim.domain.project import (
    CLIENT_ID_INVALID,
    REQUEST_TIME_INVALID,
    SIGN_INVALID,
    AccessRefused,
    Grant,
    ProjectAccess,
)

ACCESS_TOKEN_NULL = 1002


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
        if not check.ok and not (
            check.problem == "sign"
            and terminated_header_lines_sign_ok(
                method=method, path=path, query=query, headers=lower, body=body, secret=secret
            )
        ):
            raise AccessRefused(SIGN_INVALID, "sign invalid")
        grant = None
        if not token_api:
            if not lower.get("access_token"):
                raise AccessRefused(ACCESS_TOKEN_NULL, "access_token is null")
            grant = self.access.authorize(access_id, lower["access_token"], now)
        self.access.check_rate(access_id, now)
        return Caller(access_id, grant)


def terminated_header_lines_sign_ok(
    *,
    method: str,
    path: str,
    query: Sequence[tuple[str, str]],
    headers: Mapping[str, str],
    body: bytes,
    secret: str,
) -> bool:
    """The signature check with every signed header line ended by `\n` (tinytuya's layout). Without signed
    headers both layouts are the same string, already checked by `verify_request`."""
    lower = {k.lower(): v for k, v in headers.items()}
    names = [n for n in lower.get("signature-headers", "").split(":") if n]
    sign = lower.get("sign", "")
    if not names or not sign:
        return False
    lines = "".join(f"{name}:{lower.get(name.lower(), '')}\n" for name in names)
    body_hash = hashlib.sha256(body).hexdigest()
    string_to_sign = f"{method.upper()}\n{body_hash}\n{lines}\n{canonical_url(path, query)}"
    expected = compute_sign(
        client_id=lower.get("client_id", ""),
        secret=secret,
        t=lower.get("t", ""),
        string_to_sign=string_to_sign,
        access_token=lower.get("access_token", ""),
        nonce=lower.get("nonce", ""),
    )
    return hmac.compare_digest(expected, sign.upper())
