"""The loop ota's rounds run in (`fleet_shared.service.loops.while_busy`): a busy round is followed at once,
an idle or failed one after the idle wait."""

from __future__ import annotations

import asyncio
import logging

import pytest

from fleet_shared.service.loops import cancel_all, while_busy

pytestmark = pytest.mark.unit


async def rounds_run(results: list[int | Exception], idle_s: float = 60) -> list[int | Exception]:
    ran: list[int | Exception] = []

    async def work() -> int:
        result = results[len(ran)]
        ran.append(result)
        if isinstance(result, Exception):
            raise result
        return result

    task = while_busy("test-busy", idle_s, work)
    await asyncio.sleep(0.1)
    await cancel_all([task])
    assert task.cancelled()
    return ran


async def test_busy_rounds_follow_at_once_until_an_idle_one_waits() -> None:
    assert await rounds_run([3, 2, 0, 9]) == [3, 2, 0]


async def test_a_failed_round_is_logged_and_counts_as_idle(caplog: pytest.LogCaptureFixture) -> None:
    down = ConnectionError("database down")
    with caplog.at_level(logging.WARNING):
        assert await rounds_run([down, 9]) == [down]
    assert any("test-busy round failed" in r.getMessage() for r in caplog.records)
