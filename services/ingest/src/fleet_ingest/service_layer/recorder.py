"""Recording published dedup keys in the store: batched, off the hot path, retried, and expired."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from prometheus_client import Counter

from fleet_ingest.ports import DedupStore

log = logging.getLogger(__name__)


class SeenRecorder:
    """Keys confirmed on the bus are `add`ed here and written to the store in batches by `run()`.

    A failed write keeps the keys for the next try, up to `backlog_limit` of them: the seen window still
    dedupes the newest, and consumers dedupe by event id anyway.
    """

    def __init__(
        self,
        store: DedupStore,
        errors: Counter,
        *,
        batch: int,
        interval_s: float,
        backlog_limit: int,
        expire_interval_s: float,
        timeout_s: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._errors = errors
        self._batch = batch
        self._interval_s = interval_s
        self._backlog_limit = backlog_limit
        self._expire_interval_s = expire_interval_s
        self._timeout_s = timeout_s
        self._monotonic = monotonic
        self._pending: list[str] = []
        self._wake = asyncio.Event()

    def add(self, key: str) -> None:
        self._pending.append(key)

    def nudge(self) -> None:
        """Write now rather than at the next interval if a full batch is waiting."""
        if len(self._pending) >= self._batch:
            self._wake.set()

    async def run(self) -> None:
        """Write what was added every `interval_s` (or when nudged), expire old keys now and then."""
        next_expiry = self._monotonic() + self._expire_interval_s
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval_s):
                    await self._wake.wait()
            self._wake.clear()
            await self.flush()
            if self._monotonic() >= next_expiry:
                next_expiry = self._monotonic() + self._expire_interval_s
                try:
                    async with asyncio.timeout(self._timeout_s):
                        await self._store.expire()
                except Exception as exc:
                    log.warning("expiring seen messages failed: %s", exc)

    async def flush(self) -> None:
        pending = self._pending
        while pending:
            batch = pending[: self._batch]
            try:
                async with asyncio.timeout(self._timeout_s):
                    await self._store.record(batch)
            except Exception as exc:
                self._errors.inc()
                log.warning("recording seen messages failed (will retry): %s", exc)
                overflow = len(pending) - self._backlog_limit
                if overflow > 0:  # the window still dedupes them; consumers dedupe by event id
                    del pending[:overflow]
                return
            del pending[: len(batch)]
