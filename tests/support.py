"""Helpers shared by the test tiers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from fleet_shared.service.registry import service


@dataclass(frozen=True)
class Stack:
    """Where the real servers of this test run listen."""

    pulsar_url: str
    pulsar_admin_url: str
    mongodb_uri: str

    def env(self) -> dict[str, str]:
        return {
            "FLEET_PULSAR_URL": self.pulsar_url,
            "FLEET_PULSAR_ADMIN_URL": self.pulsar_admin_url,
            "FLEET_MONGODB_URI": self.mongodb_uri,
        }


def owns_stack() -> bool:
    """True when this run has a local stack of its own (`just test` starts one): only then may a test restart
    Pulsar or the database. Never on the shared dev stack (`devstack env` exports FLEET_STACK_DIR there too),
    where other runs would see the restart."""
    return bool(os.environ.get("FLEET_STACK_DIR")) and os.environ.get("FLEET_STACK", "dev") != "dev"


#: for tests that restart a server of the stack
needs_private_stack = pytest.mark.skipif(
    not owns_stack(),
    reason="restarts a server of the stack: needs a stack of its own (`just test` runs one), "
    "never the shared dev stack",
)


def _log_tail(log: Path) -> str:
    # only read when a test is already failing, so the blocking read does not matter
    return log.read_text()[-3000:]


async def wait_until_ready(
    name: str,
    proc: subprocess.Popen[bytes] | None,
    log: Path,
    get: Callable[[str], tuple[int, Any]],
    within: float,
) -> None:
    """Poll a service subprocess's /readyz until 200; fail with its log tail if it exits or stalls."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        assert proc is not None
        assert proc.poll() is None, _log_tail(log)
        try:
            if (await asyncio.to_thread(get, "/readyz"))[0] == 200:
                return
        except OSError:
            pass  # not listening yet
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{name} not ready:\n{_log_tail(log)}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def restartable_database(
    stack: Stack, name: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Stack, Callable[[], None]]]:
    """The stack for a test that restarts the database, and the restart: on a stack of its own (`just
    test`) that stack's database; on the shared dev stack a MongoDB-wire server of the test's own (stack
    `name`, beside the dev stack's Pulsar), so no other run sees the restart; stopped and removed after."""
    from fleet_devstack import LocalStack
    from fleet_devstack.config import StackConfig

    if owns_stack():
        yield stack, LocalStack.from_env().restart_mongo
        return
    monkeypatch.setenv("FLEET_STACK_MONGO_PORT", str(free_port()))
    private = LocalStack(StackConfig.load(name))
    await asyncio.to_thread(private.ferretdb.install)  # built once per checkout (the dev stack's build)
    await asyncio.to_thread(private.start_mongo)
    try:
        yield (
            Stack(stack.pulsar_url, stack.pulsar_admin_url, private.config.mongodb_uri),
            private.restart_mongo,
        )
    finally:
        await asyncio.to_thread(private.stop_mongo)
        shutil.rmtree(private.config.stack_dir, ignore_errors=True)


def stop_process(proc: subprocess.Popen[bytes] | None) -> int | None:
    """SIGTERM a service subprocess (graceful shutdown), SIGKILL it if it hangs; its exit code."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


async def until(predicate: Callable[[], bool], within: float, what: Callable[[], str]) -> None:
    """Poll `predicate` every 0.1 s; fail with `what()` if it is still false after `within` seconds."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting: {what()}")
        await asyncio.sleep(0.1)


class ServiceProcess:
    """One service of the registry run as its console script, the way the stack and a container run it.

    Its environment: this process's, then the stack's addresses, its own free port, quiet logs, then `env`.
    `api_key` is seeded as `FLEET_<SERVICE>_API_KEYS` (for services with an API) and sent on every call.
    The per-service helpers (StatusProcess, IngestProcess, SimProcess) wrap one of these with their settings.
    """

    def __init__(
        self,
        name: str,
        *,
        log: Path,
        stack: Stack | None = None,
        env: Mapping[str, str] | None = None,
        api_key: str | None = None,
        args: Sequence[str] | None = None,
    ) -> None:
        self.entry = service(name)
        self.name = name
        self.port = free_port()
        self.log = log
        self.api_key = api_key
        self.args = list(self.entry.command[1:] if args is None else args)
        own: dict[str, str] = {
            **(stack.env() if stack is not None else {}),
            "FLEET_HTTP_HOST": "127.0.0.1",
            "FLEET_HTTP_PORT": str(self.port),
            "FLEET_LOG_LEVEL": "WARNING",
        }
        if api_key is not None and self.entry.api_key:
            own[self.entry.api_keys_variable] = f"e2e:{api_key}"
        self.env = {**os.environ, **own, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def executable(self) -> str:
        script = Path(sys.executable).parent / self.entry.script
        if not script.exists():
            raise FileNotFoundError(f"{self.entry.script} is not installed in {script.parent}: uv sync")
        return str(script)

    def start(self) -> None:
        with self.log.open("ab") as out:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [self.executable(), *self.args], env=self.env, stdout=out, stderr=subprocess.STDOUT
            )

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: Mapping[str, str] | None = None,
        timeout: float = 10.0,
    ) -> tuple[int, Any]:
        """(status, JSON body or raw bytes when not JSON); connection failures raise OSError."""
        url = self.url + path + ("?" + urllib.parse.urlencode(params) if params else "")
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        data = None
        if body is not None:
            data = orjson.dumps(body)
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=timeout) as r:  # noqa: S310 - loopback
                return int(r.status), _json_or_bytes(r.read())
        except urllib.error.HTTPError as e:
            return int(e.code), _json_or_bytes(e.read())

    def get(self, path: str, params: Mapping[str, str] | None = None) -> tuple[int, Any]:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any = None) -> tuple[int, Any]:
        return self.request("POST", path, body if body is not None else {})

    async def wait_ready(self, within: float = 60.0) -> None:
        await wait_until_ready(self.name, self.proc, self.log, self.get, within)

    def metric(self, name: str) -> float:
        """The sum of a metric's samples (every label set) from /metrics."""
        _, body = self.get("/metrics")
        text = body.decode() if isinstance(body, bytes) else str(body)
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and not line.startswith("#"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no drain, no flush (reliability tests)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self) -> int | None:
        """SIGTERM and wait (SIGKILL after 30 s); the exit code."""
        return stop_process(self.proc)

    def stopped_gracefully(self, code: int | None) -> bool:
        """uvicorn exits 0 or re-raises SIGTERM once shut down; anything else was not graceful."""
        return code in (0, -signal.SIGTERM)


def _json_or_bytes(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw


def drop_subscription(admin_url: str, topic: str, subscription: str) -> None:
    """Delete a test's durable subscription (a service's on the shared device topic keeps a backlog forever
    otherwise); already gone or broker down: nothing to do."""
    path = topic.removeprefix("persistent://")
    url = f"{admin_url}/admin/v2/persistent/{path}/subscription/{subscription}?force=true"
    request = urllib.request.Request(url, method="DELETE")  # noqa: S310 - the test stack's admin API
    with contextlib.suppress(OSError), urllib.request.urlopen(request, timeout=10):  # noqa: S310
        pass


def topic_stats(admin_url: str, topic: str, *, partitioned: bool = False) -> dict[str, Any]:
    """The broker's stats of a topic (admin API): per subscription its consumers, each with what it was sent
    (`msgOutCounter`) and holds unacknowledged (`unackedMessages`). `partitioned`: per partition
    (`{"partitions": {name: stats}}`), where a Failover subscription names its `activeConsumerName`."""
    path = topic.removeprefix("persistent://")
    tail = "partitioned-stats?perPartition=true" if partitioned else "stats"
    url = f"{admin_url}/admin/v2/persistent/{path}/{tail}"
    with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310 - the test stack's admin API
        stats: dict[str, Any] = orjson.loads(r.read())
    return stats


def subscription_consumers(admin_url: str, topic: str, subscription: str) -> list[dict[str, Any]]:
    """The consumers connected to a subscription of a non-partitioned topic, with their stats."""
    sub = topic_stats(admin_url, topic).get("subscriptions", {}).get(subscription)
    return list(sub["consumers"]) if sub else []


def partition_owners(admin_url: str, topic: str, subscription: str) -> dict[str, str | None]:
    """Partition -> the consumer a Failover subscription has active on it (None: no consumer)."""
    stats = topic_stats(admin_url, topic, partitioned=True)
    out: dict[str, str | None] = {}
    for name, partition in stats.get("partitions", {}).items():
        sub = partition.get("subscriptions", {}).get(subscription)
        out[name] = sub.get("activeConsumerName") if sub else None
    return out


def subscription_summary(admin_url: str, topic: str, subscription: str) -> dict[str, Any]:
    """What a subscription of a non-partitioned topic holds, for a failure message: its backlog, what its
    consumers hold unacknowledged, and (KeyShared) the hashes held back for a moved key range, from the
    broker's stats; its mark-delete and read positions from the internal stats."""
    path = topic.removeprefix("persistent://")
    sub = topic_stats(admin_url, topic).get("subscriptions", {}).get(subscription)
    if sub is None:
        return {"subscription": "absent"}
    wanted = ("msgBacklog", "unackedMessages", "blockedSubscriptionOnUnackedMsgs", "drainingHashesCount")
    out: dict[str, Any] = {k: sub[k] for k in wanted if k in sub}
    out["consumers"] = {
        str(c.get("consumerName")): {
            k: c[k]
            for k in (
                "msgOutCounter",
                "unackedMessages",
                "drainingHashesCount",
                "drainingHashesUnackedMessages",
            )
            if k in c
        }
        for c in sub.get("consumers", [])
    }
    url = f"{admin_url}/admin/v2/persistent/{path}/internalStats"
    with contextlib.suppress(OSError, ValueError):
        with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310 - the test stack's admin API
            internal = orjson.loads(r.read())
        cursor = internal.get("cursors", {}).get(subscription, {})
        out["markDeletePosition"] = cursor.get("markDeletePosition")
        out["readPosition"] = cursor.get("readPosition")
        out["lastConfirmedEntry"] = internal.get("lastConfirmedEntry")  # where the topic ends
        out["individuallyDeletedMessages"] = str(cursor.get("individuallyDeletedMessages", ""))[:200]
    return out
