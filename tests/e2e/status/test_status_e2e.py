"""status end to end on the real Pulsar and MongoDB-wire server: 1,000 simulated devices, their device events
shuffled and duplicated in delivery; every final shadow must equal the ground truth, also after the service is
SIGKILLed mid-stream and after the database restarts mid-stream (on the shared dev stack, a database server of
the test's own). Shadow events are neither lost nor changed under a reused id: folding them per device gives
the final DP values. DP history and the presence timeline hold every report once (checked for a fifth of the
devices: two requests each).

Input: contract device events published to the device topic (status's real input), ground truth computed here.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fleet_contracts import topics
from tests.e2e.status.support import (
    FakeOpenApi,
    ShadowEventReader,
    StatusProcess,
    Truth,
    fleet,
    fold_events,
    publish,
    shuffled_with_duplicates,
)
from tests.support import Stack, drop_subscription, free_port, owns_stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

DEVICES = 1000


@dataclass
class Run:
    stack: Stack
    prefix: str  # of the run's device ids, and its Tuya project (tenant)
    status: StatusProcess
    reader: ShadowEventReader

    def fleet(self, seed: int) -> tuple[list[Any], dict[str, Truth]]:
        return fleet(self.prefix, DEVICES, seed=seed, tenant=self.prefix)


@contextlib.asynccontextmanager
async def running(stack: Stack, unique: str, tmp_path: Path) -> AsyncIterator[Run]:
    """status against `stack`, with its own database and subscription, and a reader of its shadow events."""
    openapi = FakeOpenApi()
    await openapi.start()
    subscription = f"status-e2e-{unique}"
    # a Tuya project of the run's own: another run's status on the shared topic (same device ids would
    # never clash, but its shadow events carry the same ids) acks this run's events unread, and this one
    # theirs
    status = StatusProcess(
        stack,
        database=f"status_e2e_{unique}",
        subscription=subscription,
        openapi_url=openapi.url,
        log=tmp_path / "status.log",
        tenant=f"e2e{unique}",
    )
    status.env["FLEET_STATUS_INITIAL_POSITION"] = "latest"
    # small journals: history moves to its buckets mid-stream (also across the kill and the restart)
    status.env["FLEET_STATUS_JOURNAL_MAX_ROWS"] = "4"
    reader = ShadowEventReader(stack, f"e2e-reader-{unique}", prefix=f"e2e{unique}")
    status.start()
    try:
        await status.wait_ready()
        yield Run(stack, f"e2e{unique}", status, reader)
    finally:
        status.terminate()
        reader.close()
        await openapi.stop()
        # status's durable subscription on the shared device topic would keep a backlog forever
        await asyncio.to_thread(
            drop_subscription, stack.pulsar_admin_url, topics.DEVICE_EVENTS.name, subscription
        )


@pytest.fixture
async def run(stack: Stack, unique: str, tmp_path: Path) -> AsyncIterator[Run]:
    async with running(stack, unique, tmp_path) as r:
        yield r


async def check_history(run: Run, truth: dict[str, Truth]) -> None:
    sample = {d: t for i, (d, t) in enumerate(sorted(truth.items())) if i % 5 == 0}
    problems = await run.status.wait_for_history(sample, within=300)
    assert problems == [], f"{len(problems)} devices' history differs, e.g. {problems[:3]}"


def check_events(run: Run, truth: dict[str, Truth]) -> None:
    folded, conflicts = fold_events(run.reader.drain())
    assert conflicts == [], f"event ids reused with different content: {conflicts[:5]}"
    wrong = [
        d
        for d, t in truth.items()
        if {code: value for code, (_, value) in folded.get(d, {}).items()}
        != {c: v for c, (_, v) in t.dps.items()}
    ]
    assert wrong == [], (
        f"{len(wrong)} devices whose shadow events do not add up to the shadow, e.g. {wrong[:3]}"
    )


async def test_shuffled_duplicated_delivery_gives_the_ground_truth(run: Run) -> None:
    events, truth = run.fleet(seed=7)
    await asyncio.to_thread(publish, run.stack, shuffled_with_duplicates(events))
    problems = await run.status.wait_for_truth(truth, within=600)
    assert problems == [], f"{len(problems)} shadows differ, e.g. {problems[:5]}"
    await check_history(run, truth)
    check_events(run, truth)


async def test_sigkill_mid_stream_then_restart_gives_the_ground_truth(run: Run) -> None:
    events, truth = run.fleet(seed=21)
    delivery = shuffled_with_duplicates(events, seed=22)
    half = len(delivery) // 2
    await asyncio.to_thread(publish, run.stack, delivery[:half])
    await asyncio.sleep(3)  # mid-stream: some batches written, some in flight
    run.status.kill()
    await asyncio.to_thread(publish, run.stack, delivery[half:])
    run.status.start()
    await run.status.wait_ready()
    problems = await run.status.wait_for_truth(truth, within=600)
    assert problems == [], f"{len(problems)} shadows differ, e.g. {problems[:5]}"
    await check_history(run, truth)
    check_events(run, truth)


async def test_database_restart_mid_stream_gives_the_ground_truth(
    stack: Stack, unique: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a stack of its own (`just test`) the test restarts that stack's database; on the shared dev stack
    status writes to a MongoDB-wire server of the test's own (beside the dev stack's Pulsar), so no other
    run sees the restart."""
    from fleet_devstack import LocalStack
    from fleet_devstack.config import StackConfig

    private: LocalStack | None = None
    if owns_stack():
        restart = LocalStack.from_env().restart_mongo
    else:
        monkeypatch.setenv("FLEET_STACK_MONGO_PORT", str(free_port()))
        private = LocalStack(StackConfig.load(f"st{unique}"))
        await asyncio.to_thread(private.ferretdb.install)  # built once per checkout (the dev stack's build)
        await asyncio.to_thread(private.start_mongo)
        stack = Stack(stack.pulsar_url, stack.pulsar_admin_url, private.config.mongodb_uri)
        restart = private.restart_mongo
    try:
        async with running(stack, unique, tmp_path) as run:
            events, truth = run.fleet(seed=31)
            delivery = shuffled_with_duplicates(events, seed=32)
            half = len(delivery) // 2
            await asyncio.to_thread(publish, run.stack, delivery[:half])
            await asyncio.sleep(2)
            await asyncio.to_thread(restart)
            await asyncio.to_thread(publish, run.stack, delivery[half:])
            problems = await run.status.wait_for_truth(truth, within=600)
            assert problems == [], f"{len(problems)} shadows differ, e.g. {problems[:5]}"
            await check_history(run, truth)
            check_events(run, truth)
    finally:
        if private is not None:
            await asyncio.to_thread(private.stop_mongo)
            shutil.rmtree(private.config.stack_dir, ignore_errors=True)
