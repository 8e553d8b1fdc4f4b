"""Helpers shared by the test tiers."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Stack:
    """Where the real servers of this test run listen."""

    pulsar_url: str
    pulsar_admin_url: str
    mongodb_uri: str


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
