"""OTA (REFERENCE §7): firmware releases per product and channel, and the per-device upgrade state machine.

    READY(1) --start--> UPGRADING(2, progress 0..99) --> DONE(3)      device runs the new version
                                                      \\-> FAILED(4)    at the planned progress
                                                       \\-> TIMED_OUT(7) no progress for `timeout_s`

A sleepy (low-power) or offline device keeps the job at UPGRADING/0 until it is awake; the timeout only
counts from the moment the device starts downloading.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

from fleet_contracts.tuya import OtaUpgradeStatus, UpgradeType


class OtaOutcome(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    TIMEOUT = "timeout"
    DONE_OLD_VERSION = "done_old_version"  # Tuya reports done; the device keeps the old firmware


FINAL_STATUSES = frozenset({OtaUpgradeStatus.DONE, OtaUpgradeStatus.FAILED, OtaUpgradeStatus.TIMED_OUT})


@dataclass(frozen=True)
class FirmwareRelease:
    product_id: str
    channel: int
    version: str
    upgrade_type: int = UpgradeType.REMINDER
    timeout_s: int = 300
    file_size: int = 524288
    md5: str = ""
    desc: str = ""


class OtaStep(NamedTuple):
    """One visible step of an upgrade: one push message, stamped with the time the step happened (steps
    caught up in one `advance` keep their own times, so no two messages of a job carry the same data)."""

    status: OtaUpgradeStatus
    progress: int
    at_ms: int


def version_key(version: str) -> tuple[int, ...]:
    parts: list[int] = []
    for part in version.split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


@dataclass
class OtaJob:
    device_id: str
    channel: int
    from_version: str
    to_version: str
    outcome: OtaOutcome
    # Progress (%) at which a failing job fails, or a timing-out job stalls.
    stop_at: int
    timeout_ms: int
    status: OtaUpgradeStatus = OtaUpgradeStatus.UPGRADING
    progress: int = 0
    started_ms: int | None = None  # when the device started downloading (None: waiting for it to wake)
    last_step_ms: int = 0
    finished_ms: int | None = None

    @property
    def waiting(self) -> bool:
        return self.status is OtaUpgradeStatus.UPGRADING and self.started_ms is None

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES

    def advance(self, now_ms: int, device_awake: bool, step_ms: int, step_pct: int) -> list[OtaStep]:
        """Moves the job on to `now_ms`; returns each visible step (one message each)."""
        if self.final:
            return []
        steps: list[OtaStep] = []
        if self.started_ms is None:
            if not device_awake:
                return []
            self.started_ms = self.last_step_ms = now_ms
        elif not device_awake and self.outcome is not OtaOutcome.TIMEOUT:
            # Asleep or offline mid-download: no progress meanwhile (a stalled job still times out).
            self.last_step_ms = now_ms
            return []
        while not self.final and now_ms - self.last_step_ms >= step_ms:
            step_time = self.last_step_ms + step_ms
            if self.outcome is OtaOutcome.TIMEOUT and self.progress >= self.stop_at:
                # Stalled: the device stopped answering; the cloud gives up after the timeout.
                if step_time - self.started_ms >= self.timeout_ms:
                    self._finish(OtaUpgradeStatus.TIMED_OUT, step_time)
                    steps.append(OtaStep(self.status, self.progress, step_time))
                self.last_step_ms = step_time
                continue
            self.last_step_ms = step_time
            self.progress = min(100, self.progress + step_pct)
            if self.outcome is OtaOutcome.FAILURE and self.progress >= self.stop_at:
                self.progress = self.stop_at
                self._finish(OtaUpgradeStatus.FAILED, step_time)
            elif self.outcome is OtaOutcome.TIMEOUT and self.progress >= self.stop_at:
                self.progress = self.stop_at
            elif self.progress >= 100:
                self._finish(OtaUpgradeStatus.DONE, step_time)
            steps.append(OtaStep(self.status, self.progress, step_time))
        return steps

    def _finish(self, status: OtaUpgradeStatus, at_ms: int) -> None:
        self.status = status
        self.finished_ms = at_ms
        if status is OtaUpgradeStatus.DONE:
            self.progress = 100
