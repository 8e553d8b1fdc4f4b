"""Background server processes tracked by pid files, started and stopped idempotently."""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class StackError(RuntimeError):
    """A component could not be installed, started or reached; the message says what to do."""


@dataclass(frozen=True)
class ManagedProcess:
    """One server process: its command line, pid file and log file."""

    name: str
    pid_file: Path
    log_file: Path

    def pid(self) -> int | None:
        """The recorded pid if that process is still alive and still ours (pids get reused)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            # Servers carry their folder in argv; services carry it in their environment.
            identity = Path(f"/proc/{pid}/cmdline").read_bytes() + Path(f"/proc/{pid}/environ").read_bytes()
        except (FileNotFoundError, PermissionError, ProcessLookupError):  # it exited while being read
            return None
        return pid if self.marker().encode() in identity else None

    def marker(self) -> str:
        # Every command line carries the pid file's folder, which is unique per stack and component.
        return str(self.pid_file.parent)

    def start(
        self, argv: Sequence[str], cwd: Path, env: dict[str, str] | None = None, user: int | None = None
    ) -> int:
        """Start in the background (as the user id `user`, when given: PostgreSQL refuses to run as root)."""
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            proc = subprocess.Popen(  # noqa: S603 - argv is built by this package, never from input
                list(argv),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                start_new_session=True,  # own process group: `down` stops children too, Ctrl-C here does not
                **run_as(user),
            )
        self.pid_file.write_text(str(proc.pid))
        # Until exec, /proc shows the parent's command line: wait so pid() recognises the new process.
        wait_until(lambda: self.pid() is not None or proc.poll() is not None, 10.0, interval=0.02)
        return proc.pid

    def stop(self, timeout: float = 30.0, sig: int = signal.SIGTERM) -> bool:
        """Stop gracefully, then kill; True if something was running."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        _signal_group(pid, sig)
        if not wait_until(lambda: not _alive(pid), timeout):
            _signal_group(pid, signal.SIGKILL)
            wait_until(lambda: not _alive(pid), 10.0)
        self.pid_file.unlink(missing_ok=True)
        return True

    def rss_mib(self) -> float | None:
        pid = self.pid()
        if pid is None:
            return None
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return None

    def tail(self, lines: int = 40) -> str:
        if not self.log_file.exists():
            return ""
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])


def run_as(uid: int | None) -> dict[str, Any]:
    """Popen's arguments to run as `uid` (with its primary group and no other)."""
    if uid is None:
        return {}
    return {"user": uid, "group": pwd.getpwuid(uid).pw_gid, "extra_groups": []}


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has exited; only its parent's wait() is missing


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # it exited on its own meanwhile
        os.killpg(pid, sig)


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0
