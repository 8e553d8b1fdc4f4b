"""A cloud project's access (REFERENCE §4): access tokens with a lifetime, single-use refresh tokens, the
request-time window and the per-project request rate. Pure: token strings and `now_ms` are passed in."""

from __future__ import annotations

from dataclasses import dataclass, field

TOKEN_EXPIRED = 1010
TOKEN_INVALID = 1011
REQUEST_TIME_INVALID = 1013
CLIENT_ID_INVALID = 1005
SIGN_INVALID = 1004
TOO_FREQUENT = 1199


class AccessRefused(Exception):
    """A request the gate refuses; `code`/`msg` are Tuya's."""

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(f"{code}: {msg}")
        self.code = code
        self.msg = msg


@dataclass
class Grant:
    access_id: str
    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    uid: str
    expire_ms: int
    lifetime_s: int


@dataclass
class TokenBucket:
    """Requests per second with a burst; refills continuously."""

    rate: float
    burst: float
    tokens: float = -1.0
    updated_ms: int = 0

    def take(self, now_ms: int) -> bool:
        if self.rate <= 0:
            return True
        if self.tokens < 0:
            self.tokens, self.updated_ms = self.burst, now_ms
        elapsed = max(0, now_ms - self.updated_ms) / 1000
        self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
        self.updated_ms = now_ms
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


@dataclass
class ProjectAccess:
    """Tokens and limits of the projects the simulated cloud knows (access id -> developer uid)."""

    token_lifetime_s: int = 7200
    max_clock_skew_ms: int = 300_000
    rate_per_second: float = 50.0
    burst: float = 100.0
    developer_uids: dict[str, str] = field(default_factory=dict)
    _grants: dict[str, Grant] = field(default_factory=dict, repr=False)  # by access token
    _refresh: dict[str, Grant] = field(default_factory=dict, repr=False)  # by refresh token
    _buckets: dict[str, TokenBucket] = field(default_factory=dict)

    def check_time(self, t_ms: int | None, now_ms: int) -> None:
        if t_ms is None or abs(now_ms - t_ms) > self.max_clock_skew_ms:
            raise AccessRefused(REQUEST_TIME_INVALID, "request time is invalid")

    def check_rate(self, access_id: str, now_ms: int) -> None:
        bucket = self._buckets.setdefault(access_id, TokenBucket(self.rate_per_second, self.burst))
        if not bucket.take(now_ms):
            raise AccessRefused(TOO_FREQUENT, "requests too frequently")

    def grant(
        self, access_id: str, access_token: str, refresh_token: str, now_ms: int, uid: str | None = None
    ) -> Grant:
        """A token pair for the project's developer, or for `uid` (an app user who logged in)."""
        grant = Grant(
            access_id=access_id,
            access_token=access_token,
            refresh_token=refresh_token,
            uid=self.developer_uids.get(access_id, "") if uid is None else uid,
            expire_ms=now_ms + self.token_lifetime_s * 1000,
            lifetime_s=self.token_lifetime_s,
        )
        self._grants[access_token] = grant
        self._refresh[refresh_token] = grant
        return grant

    def refresh(
        self, access_id: str, old_refresh_token: str, access_token: str, refresh_token: str, now_ms: int
    ) -> Grant:
        """A new pair for a refresh token; the old access and refresh tokens stop working (single use)."""
        old = self._refresh.get(old_refresh_token)
        if old is None or old.access_id != access_id:
            raise AccessRefused(TOKEN_INVALID, "token invalid")
        del self._refresh[old_refresh_token]
        self._grants.pop(old.access_token, None)
        return self.grant(access_id, access_token, refresh_token, now_ms, old.uid)

    def authorize(self, access_id: str, access_token: str, now_ms: int) -> Grant:
        grant = self._grants.get(access_token) if access_token else None
        if grant is None or grant.access_id != access_id:
            raise AccessRefused(TOKEN_INVALID, "token invalid")
        if now_ms >= grant.expire_ms:
            # Tuya's wording for 1010: the SDKs renew on it (tinytuya looks for "token invalid" in the text)
            raise AccessRefused(TOKEN_EXPIRED, "token invalid")
        return grant

    def expire(self, access_token: str) -> None:
        """Ends a token's life now (control API: token-expiry scenarios)."""
        grant = self._grants.get(access_token)
        if grant is not None:
            grant.expire_ms = 0

    def expire_all(self) -> int:
        for grant in self._grants.values():
            grant.expire_ms = 0
        return len(self._grants)
