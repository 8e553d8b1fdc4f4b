"""Background rounds: a failed round is logged and the loop goes on; the first round waits an interval unless
asked to run at once; cancel_all ends every task."""

from __future__ import annotations

import asyncio
import logging

import pytest

from fleet_shared.service.loops import cancel_all, every

pytestmark = pytest.mark.unit


async def test_a_failed_round_is_logged_and_the_next_one_runs(caplog: pytest.LogCaptureFixture) -> None:
    rounds: list[int] = []
    third = asyncio.Event()

    async def work() -> None:
        rounds.append(len(rounds))
        if len(rounds) == 3:
            third.set()
        if len(rounds) == 1:
            raise ConnectionError("database down")

    with caplog.at_level(logging.WARNING):
        task = every("test-loop", 0.01, work, first_now=True)
        await asyncio.wait_for(third.wait(), 5)
        await cancel_all([task, None])
    assert task.cancelled()
    assert any(
        "test-loop round failed" in r.getMessage() and "database down" in r.getMessage()
        for r in caplog.records
    )


async def test_the_first_round_waits_one_interval_unless_first_now() -> None:
    ran: list[str] = []

    async def work(name: str) -> None:
        ran.append(name)

    later = every("later", 60, lambda: work("later"))
    now = every("now", 60, lambda: work("now"), first_now=True)
    await asyncio.sleep(0.05)
    await cancel_all([later, now])
    assert ran == ["now"]
