"""A short-lived process on the bus, as a test process or a CLI command is: start, publish, consume one, stop,
exit. Run it many times to count exits aborted by pulsar-client's C++ core ("terminate called without an
active exception", exit status 134; see `PulsarBroker._close_client`):

    for i in $(seq 20); do uv run python tests/integration/bus/exit_after_close.py $FLEET_PULSAR_URL \\
        persistent://public/default/exit-probe thread-close; echo $?; done

The last argument picks the close: `thread-close` (the broker's own) or `async-close` (`await client.close()`,
the close it replaced).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import uuid
from typing import Any

from pulsar import asyncio as pa

from fleet_shared.pulsar import InitialPosition, PulsarBroker


async def _async_close(self: Any) -> None:
    client, self._connection = self._connection, None
    self.config.broker_config.disconnect()
    if client is not None:
        with contextlib.suppress(pa.PulsarException):
            await client.close()


async def main(url: str, topic: str) -> None:
    broker = PulsarBroker(url, logger=None)
    got = asyncio.Event()

    @broker.subscriber(topic, subscription="probe", initial_position=InitialPosition.Earliest)
    async def handle(body: dict[str, int]) -> None:
        got.set()

    await broker.start()
    try:
        await broker.publish({"n": 1}, topic, key=uuid.uuid4().hex)
        await asyncio.wait_for(got.wait(), 10)
    finally:
        await broker.stop()


if __name__ == "__main__":
    url, topic, close = sys.argv[1:4]
    if close == "async-close":
        PulsarBroker._close_client = _async_close  # type: ignore[method-assign]
    asyncio.run(main(url, topic))
