"""A minimal service on the kit, run as a process by test_service_runner: it records its life in a file."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Mapping
from pathlib import Path

from fastapi import FastAPI

from fleet_shared.service import ReadinessCheck, ServiceSettings, build_app, run_service


class Recorder:
    def __init__(self, journal: Path) -> None:
        self.journal = journal

    def note(self, what: str) -> None:
        with self.journal.open("a") as out:
            out.write(what + "\n")

    async def start(self) -> None:
        self.note("start")

    async def stop_consuming(self) -> None:
        self.note("stop_consuming")

    async def drain(self) -> None:
        await asyncio.sleep(0.2)  # in-flight work finishing
        self.note("drained")

    async def stop(self) -> None:
        self.note("stop")

    def readiness_checks(self) -> Mapping[str, ReadinessCheck]:
        async def ok() -> bool:
            return True

        return {"recorder": ok}


def make_app(settings: ServiceSettings) -> FastAPI:
    return build_app("kit-test", Recorder(Path(sys.argv[1])), drain_timeout_s=settings.shutdown_timeout_s)


if __name__ == "__main__":
    run_service("kit-test", ServiceSettings(), make_app)
