"""A fake Tuya cloud at the HTTP seam (`httpx.MockTransport`): checks every signature with the library's own
verifier, issues tokens and single-use refresh tokens, and can be scripted to fail."""

from __future__ import annotations

import json
import secrets
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from fleet_shared.tuya.signing import verify_request

ACCESS_ID = "xt9p4fx9y8r5b3c2a1d0"
ACCESS_SECRET = "4f1c9e0b7a6d5c3e2f1a0b9c8d7e6f5a"

Handler = Callable[[httpx.Request], Any]


@dataclass
class FakeTuya:
    expire_time: int = 7200
    access_tokens: set[str] = field(default_factory=set)
    refresh_tokens: set[str] = field(default_factory=set)
    calls: list[str] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    # path -> list of scripted responses (consumed in order): an int Tuya code, an int HTTP status >= 500
    # wrapped as ("http", status), or a full JSON body dict.
    script: dict[str, list[Any]] = field(default_factory=dict)
    routes: dict[tuple[str, str], Handler] = field(default_factory=dict)
    issued: list[dict[str, Any]] = field(default_factory=list)
    server_t: int = 1763700000000

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=self.transport())

    def _ok(self, result: Any) -> httpx.Response:
        return httpx.Response(
            200, json={"success": True, "result": result, "t": self.server_t, "tid": "tid-1"}
        )

    def _fail(self, code: int, msg: str = "failed") -> httpx.Response:
        body = {"success": False, "code": code, "msg": msg, "t": self.server_t, "tid": "tid-2"}
        return httpx.Response(200, json=body)

    def _issue(self) -> dict[str, Any]:
        token = {
            "access_token": "at" + secrets.token_hex(15),
            "refresh_token": "rt" + secrets.token_hex(15),
            "expire_time": self.expire_time,
            "uid": "bay1700000000000",
        }
        self.access_tokens.add(token["access_token"])
        self.refresh_tokens.add(token["refresh_token"])
        self.issued.append(token)
        return token

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.calls.append(f"{request.method} {path}")
        self.counts[path] += 1
        check = verify_request(
            method=request.method,
            path=path,
            query=request.url.params.multi_items(),
            headers=dict(request.headers),
            body=request.content,
            secret=ACCESS_SECRET,
        )
        if not check.ok:
            return self._fail(1004, "sign invalid")
        script = self.script.get(path)
        if script:
            step = script.pop(0)
            if isinstance(step, tuple):
                return httpx.Response(step[1], text="upstream error")
            if isinstance(step, int):
                return self._fail(step, f"scripted {step} for token {check.access_token}")
            return httpx.Response(200, json=step)
        if path == "/v1.0/token":
            if check.access_token or request.url.params.get("grant_type") != "1":
                return self._fail(1003)
            return self._ok(self._issue())
        if path.startswith("/v1.0/token/"):
            refresh = path.rsplit("/", 1)[1]
            if refresh not in self.refresh_tokens:
                return self._fail(1012, "token status invalid")
            self.refresh_tokens.discard(refresh)  # single use; old pair invalidated
            old = next(t for t in self.issued if t["refresh_token"] == refresh)
            self.access_tokens.discard(old["access_token"])
            return self._ok(self._issue())
        if check.access_token not in self.access_tokens:
            return self._fail(1011, "token invalid")
        route = self.routes.get((request.method, path))
        if route is None:
            return self._fail(1108, "uri path invalid")
        result = route(request)
        return result if isinstance(result, httpx.Response) else self._ok(result)


def json_body(request: httpx.Request) -> Any:
    return json.loads(request.content)
