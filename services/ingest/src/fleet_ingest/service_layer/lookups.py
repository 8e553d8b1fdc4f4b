"""Dedup-store lookups, coalesced: one `$in` query at a time, the keys arriving meanwhile join the next."""

from __future__ import annotations

import asyncio

from fleet_ingest.ports import DedupStore


class LookupBatcher:
    """Coalesces dedup-store lookups: one `$in` query at a time; keys that arrive meanwhile wait for the
    next one (up to `max_batch` keys per query). A fast store sees small prompt queries, a slow one fewer
    and bigger ones instead of a queue of them (FerretDB, for one, scans the collection per `$in`)."""

    def __init__(self, store: DedupStore, *, max_batch: int, timeout_s: float) -> None:
        self._store = store
        self._timeout_s = timeout_s
        self._max_batch = max_batch
        self._keys: list[str] = []
        self._future: asyncio.Future[set[str]] | None = None
        self._running: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def check(self, keys: list[str]) -> asyncio.Future[set[str]]:
        """A future of the set of seen keys in the lookup that `keys` joined."""
        if self._future is None:
            self._future = asyncio.get_running_loop().create_future()
        future = self._future
        self._keys.extend(keys)
        if self._running is None or len(self._keys) >= self._max_batch:
            self._flush()
        return future

    def _flush(self) -> None:
        keys, future = self._keys, self._future
        self._keys, self._future = [], None
        if future is None:
            return
        task = asyncio.ensure_future(self._run(keys, future))
        self._running = task
        self._tasks.add(task)
        task.add_done_callback(self._ran)

    def _ran(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._running is task:
            self._running = None
            if self._keys:
                self._flush()

    async def _run(self, keys: list[str], future: asyncio.Future[set[str]]) -> None:
        try:
            async with asyncio.timeout(self._timeout_s):
                result = await self._store.seen(keys)
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
                future.exception()  # marks it retrieved: a cycle that ended no longer awaits it
            return
        if not future.done():
            future.set_result(result)
