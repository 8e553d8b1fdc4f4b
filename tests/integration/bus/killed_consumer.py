"""A consumer process that takes messages and never acknowledges them, until it is SIGKILLed.

Run by test_pulsar_bus.py: `python killed_consumer.py URL TOPIC SUBSCRIPTION`.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from fleet_shared.pulsar import ConsumerType, InitialPosition, PulsarBroker


async def main(url: str, topic: str, subscription: str) -> None:
    broker = PulsarBroker(url, logger=None)  # stdout carries the protocol lines only

    @broker.subscriber(
        topic,
        subscription=subscription,
        subscription_type=ConsumerType.Shared,
        initial_position=InitialPosition.Earliest,
        receiver_queue_size=10,
    )
    async def hold(body: dict[str, Any]) -> None:
        print(f"got {body['n']}", flush=True)
        await asyncio.Event().wait()  # never returns, so never acks

    await broker.start()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
