"""Tuya signatures (REFERENCE §1, §2, §4): OpenAPI request signing and its server-side check, the push-message
envelope `sign`, and the Pulsar `auth1` password.

Used by the OpenAPI client (signing) and by the Tuya cloud simulator (verification): both sides share one
implementation of the string-to-sign.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

SIGN_METHOD = "HMAC-SHA256"
EMPTY_BODY_SHA256 = hashlib.sha256(b"").hexdigest()

QueryValue = str | int | float | bool
Query = Mapping[str, QueryValue | None] | Iterable[tuple[str, QueryValue | None]]


# ----------------------------------------------------------------------------------------------------
# OpenAPI request signing
# ----------------------------------------------------------------------------------------------------


def query_value(value: QueryValue) -> str:
    """How a query value is written both on the wire and in the string to sign."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _query_pairs(query: Query | None) -> list[tuple[str, str]]:
    if query is None:
        return []
    items = query.items() if isinstance(query, Mapping) else query
    return [(str(k), query_value(v)) for k, v in items if v is not None]


def canonical_url(path: str, query: Query | None = None) -> str:
    """path + `?` + decoded `k=v` pairs sorted by key, joined by `&` (TCJ); the bare path if no query."""
    pairs = sorted(_query_pairs(query), key=lambda kv: kv[0])
    if not pairs:
        return path
    return path + "?" + "&".join(f"{k}={v}" for k, v in pairs)


def string_to_sign(
    method: str,
    path: str,
    query: Query | None = None,
    body: bytes = b"",
    signed_headers: Iterable[tuple[str, str]] = (),
) -> str:
    """METHOD \\n sha256hex(body) \\n headerLines \\n url.

    headerLines joins `name:value` with `\\n` as TCJ does; with no signed headers it is empty, which
    yields the `\\n\\n` between body hash and url.
    """
    header_lines = "\n".join(f"{name}:{value}" for name, value in signed_headers)
    body_hash = hashlib.sha256(body).hexdigest()
    return f"{method.upper()}\n{body_hash}\n{header_lines}\n{canonical_url(path, query)}"


def compute_sign(
    *,
    client_id: str,
    secret: str,
    t: int | str,
    string_to_sign: str,
    access_token: str = "",
    nonce: str = "",
) -> str:
    """UPPER(hex(HMAC-SHA256(secret, client_id + access_token + t + nonce + stringToSign)))."""
    message = f"{client_id}{access_token}{t}{nonce}{string_to_sign}"
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest().upper()


@dataclass(frozen=True)
class SignedRequest:
    """What the client puts in the headers. `repr` leaves out the token (it is a bearer secret)."""

    client_id: str
    t: int
    sign: str
    string_to_sign: str
    nonce: str = ""
    access_token: str = field(default="", repr=False)

    def headers(self) -> dict[str, str]:
        headers = {
            "client_id": self.client_id,
            "sign": self.sign,
            "sign_method": SIGN_METHOD,
            "t": str(self.t),
        }
        if self.nonce:
            headers["nonce"] = self.nonce
        if self.access_token:
            headers["access_token"] = self.access_token
        return headers


def sign_request(
    *,
    client_id: str,
    secret: str,
    t: int,
    method: str,
    path: str,
    query: Query | None = None,
    body: bytes = b"",
    access_token: str = "",
    nonce: str = "",
) -> SignedRequest:
    """Signs one OpenAPI request. Token APIs (`/v1.0/token...`) pass no access_token."""
    sts = string_to_sign(method, path, query, body)
    sign = compute_sign(
        client_id=client_id, secret=secret, t=t, string_to_sign=sts, access_token=access_token, nonce=nonce
    )
    return SignedRequest(
        client_id=client_id, t=t, sign=sign, string_to_sign=sts, nonce=nonce, access_token=access_token
    )


@dataclass(frozen=True)
class SignatureCheck:
    """Outcome of a server-side check. `problem`: missing_header, sign_method or sign (never secrets)."""

    ok: bool
    client_id: str = ""
    access_token: str = field(default="", repr=False)
    t: int | None = None
    problem: str = ""


def verify_request(
    *,
    method: str,
    path: str,
    query: Query | None,
    headers: Mapping[str, str],
    body: bytes,
    secret: str,
) -> SignatureCheck:
    """Verifies a signed request as Tuya's cloud does (used by the simulator).

    `headers` may use any case; `query` holds the decoded pairs. Whether an access token is required for the
    path, and whether `t` is in the allowed window, is the caller's decision (see `SignatureCheck.t`).
    """
    lower = {k.lower(): v for k, v in headers.items()}
    client_id = lower.get("client_id", "")
    sign = lower.get("sign", "")
    t_raw = lower.get("t", "")
    if not client_id or not sign or not t_raw:
        return SignatureCheck(ok=False, client_id=client_id, problem="missing_header")
    if lower.get("sign_method", SIGN_METHOD).upper() != SIGN_METHOD:
        return SignatureCheck(ok=False, client_id=client_id, problem="sign_method")
    try:
        t = int(t_raw)
    except ValueError:
        return SignatureCheck(ok=False, client_id=client_id, problem="missing_header")
    access_token = lower.get("access_token", "")
    nonce = lower.get("nonce", "")
    signed_names = [n for n in lower.get("signature-headers", "").split(":") if n]
    signed_headers = [(n, lower.get(n.lower(), "")) for n in signed_names]
    sts = string_to_sign(method, path, query, body, signed_headers)
    expected = compute_sign(
        client_id=client_id,
        secret=secret,
        t=t_raw,
        string_to_sign=sts,
        access_token=access_token,
        nonce=nonce,
    )
    ok = hmac.compare_digest(expected, sign.upper())
    return SignatureCheck(
        ok=ok, client_id=client_id, access_token=access_token, t=t, problem="" if ok else "sign"
    )


# ----------------------------------------------------------------------------------------------------
# Push message envelope sign
# ----------------------------------------------------------------------------------------------------


def _sign_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def push_sign_string(envelope: Mapping[str, object], secret: str) -> str:
    """Outer keys except `sign` and empty values, `k=v` sorted by key, joined by `||`, then `||` + secret."""
    pairs = sorted(
        (k, _sign_value(v)) for k, v in envelope.items() if k != "sign" and v is not None and v != ""
    )
    return "||".join(f"{k}={v}" for k, v in pairs) + "||" + secret


def push_sign(envelope: Mapping[str, object], secret: str) -> str:
    """md5 (32 lowercase hex) of `push_sign_string`. MD5 is Tuya's choice, not ours."""
    return hashlib.md5(push_sign_string(envelope, secret).encode(), usedforsecurity=False).hexdigest()


def verify_push_sign(envelope: Mapping[str, object], secret: str) -> bool:
    sign = envelope.get("sign")
    if not isinstance(sign, str):
        return False
    return hmac.compare_digest(push_sign(envelope, secret), sign.lower())


# ----------------------------------------------------------------------------------------------------
# Pulsar auth1
# ----------------------------------------------------------------------------------------------------


def _md5hex(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def pulsar_password(access_id: str, access_secret: str) -> str:
    """md5hex(accessId + md5hex(accessSecret))[8:24]: 16 lowercase hex characters."""
    return _md5hex(access_id + _md5hex(access_secret))[8:24]


def pulsar_auth_data(access_id: str, access_secret: str) -> dict[str, str]:
    """The `auth1` auth data `{"username", "password"}`; also the WebSocket `username`/`password` headers."""
    return {"username": access_id, "password": pulsar_password(access_id, access_secret)}
