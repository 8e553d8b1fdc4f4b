"""Background rounds a service runs beside its consumers (polls, sweeps, relays): one way to run them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

log = logging.getLogger(__name__)


def every(
    name: str, interval_s: float, work: Callable[[], Awaitable[Any]], *, first_now: bool = False
) -> asyncio.Task[None]:
    """Run `work` every `interval_s` seconds until cancelled; the first round after one interval, or at once.

    A failed round is logged and the next one runs as planned: a database or Tuya outage must not end the loop
    (the work itself is idempotent, so the next round picks up what this one left)."""

    async def loop() -> None:
        if not first_now:
            await asyncio.sleep(interval_s)
        while True:
            try:
                await work()
            except Exception as e:  # any failure of one round: logged, retried next round
                log.warning("%s round failed: %r", name, e, extra={"loop": name})
            await asyncio.sleep(interval_s)

    return asyncio.create_task(loop(), name=name)


def while_busy(name: str, idle_s: float, work: Callable[[], Awaitable[int]]) -> asyncio.Task[None]:
    """Run `work` again at once while it reports work done (a count above 0), else after `idle_s`, until
    cancelled (a backlog drains at full speed, an idle loop costs one round per `idle_s`). A failed round is
    logged and counts as idle, as in `every`."""

    async def loop() -> None:
        while True:
            try:
                busy = await work()
            except Exception as e:  # any failure of one round: logged, retried after the idle wait
                log.warning("%s round failed: %r", name, e, extra={"loop": name})
                busy = 0
            await asyncio.sleep(0 if busy else idle_s)

    return asyncio.create_task(loop(), name=name)


async def cancel_all(tasks: Iterable[asyncio.Task[Any] | None]) -> None:
    """Cancel the tasks and wait until each has ended (whatever it raised)."""
    running = [t for t in tasks if t is not None]
    for task in running:
        task.cancel()
    await asyncio.gather(*running, return_exceptions=True)
