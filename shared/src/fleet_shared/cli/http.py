"""The CLI's HTTP client of one service: base URL and API key found the same way for every group.

- base URL: `FLEET_<SERVICE>_URL` (the registry's `url_variable`), else the service's port on the dev stack;
- API key: `FLEET_API_KEY`, else the local stack's key file `<stack dir>/<service>-api-key`, the stack dir
  being `FLEET_STACK_DIR` (`devstack env` exports it) or, in a checkout, the `FLEET_STACK` stack's folder.

Errors come back as `CliError`s saying what the service answered (its problem+json `detail` and invalid
fields), never the request body.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from fleet_shared.service.registry import ServiceEntry, service

from .errors import RequestFailed, UsageError

ENV_API_KEY = "FLEET_API_KEY"
ENV_STACK_DIR = "FLEET_STACK_DIR"


def base_url(entry: ServiceEntry, env: Mapping[str, str]) -> str:
    return (env.get(entry.url_variable) or entry.dev_url).rstrip("/")


def stack_dir(env: Mapping[str, str]) -> Path | None:
    if env.get(ENV_STACK_DIR):
        return Path(env[ENV_STACK_DIR])
    try:  # a checkout with the dev tools: the stack folder as devstack lays it out
        from fleet_devstack.config import StackConfig
    except ImportError:
        return None
    try:
        folder: Path = StackConfig.load(env.get("FLEET_STACK")).stack_dir
    except RuntimeError:  # installed outside a checkout
        return None
    return folder


def api_key(entry: ServiceEntry, env: Mapping[str, str]) -> str | None:
    if env.get(ENV_API_KEY):
        return env[ENV_API_KEY]
    folder = stack_dir(env)
    if folder is None or not entry.api_key:
        return None
    try:
        return (folder / entry.key_file).read_text().strip() or None
    except OSError:
        return None


class ServiceClient:
    """JSON over HTTP to one service; every failure a `CliError` naming the service."""

    def __init__(
        self,
        name: str,
        url: str,
        key: str | None,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.name = name
        self.url = url
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=url, headers=headers, timeout=timeout, transport=transport)

    def close(self) -> None:
        self.http.close()

    def request(
        self, method: str, path: str, *, params: Mapping[str, Any] | None = None, body: Any = None
    ) -> Any:
        try:
            response = self.http.request(method, path, params=params, json=body)
        except httpx.HTTPError as exc:
            raise RequestFailed(
                f"{self.name} at {self.url} is not reachable ({exc}); is it running?", None
            ) from None
        if response.is_success:
            try:
                return response.json() if response.content else None
            except ValueError:
                raise RequestFailed(f"{self.name}: {method} {path}: not JSON", response.status_code) from None
        raise RequestFailed(
            f"{self.name}: {method} {path}: {describe_failure(response)}", response.status_code
        )

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, body=body if body is not None else {})

    def pages(
        self, path: str, params: Mapping[str, Any], *, limit: int | None = None
    ) -> Iterator[dict[str, Any]]:
        """Every item of a cursor-paged list (`{"items": [...], "next_cursor": ...}`), at most `limit`."""
        query = dict(params)
        seen = 0
        while True:
            page = self.get(path, query)
            for item in page["items"]:
                if limit is not None and seen >= limit:
                    return
                seen += 1
                yield item
            if not page.get("next_cursor"):
                return
            query["cursor"] = page["next_cursor"]


def describe_failure(response: httpx.Response) -> str:
    """`404 Not Found: no shadow for device x`, with a 422's invalid fields (problem+json or FastAPI's)."""
    text = f"{response.status_code} {response.reason_phrase}"
    try:
        body = response.json()
    except ValueError:
        return text
    if not isinstance(body, dict):
        return text
    detail = body.get("detail")
    if isinstance(detail, str):
        text += f": {detail}"
    fields = body.get("errors") or (detail if isinstance(detail, list) else [])
    names = []
    for error in fields:
        if isinstance(error, dict):
            where = error.get("field") or ".".join(str(p) for p in error.get("loc", ()))
            names.append(f"{where}: {error.get('message') or error.get('msg')}")
    if names:
        text += " (" + "; ".join(names) + ")"
    if response.status_code == 401:
        text += f" (set {ENV_API_KEY}, or run against a local stack that has its key file)"
    return text


@dataclass
class CliContext:
    """What every command reaches through `ctx.obj`: the environment, the HTTP transport (tests swap it)."""

    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    transport: httpx.BaseTransport | None = None

    def client(self, name: str) -> ServiceClient:
        try:
            entry = service(name)
        except KeyError as exc:
            raise UsageError(str(exc)) from None
        return ServiceClient(
            name, base_url(entry, self.env), api_key(entry, self.env), transport=self.transport
        )
