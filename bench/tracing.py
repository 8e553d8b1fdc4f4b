"""What the broker's tracing costs per message, in-process: one broker and handler, each tracing setup.

    uv run python bench/tracing.py [--messages 2000] [--rounds 5]

No Pulsar and no network (`TestPulsarBroker`): each message is published and consumed in memory, so what
differs between the setups is the telemetry middleware's publish and process spans and nothing else. The
setups run interleaved, `--rounds` times each in the same process; the medians are printed (CPU time of the
process per message, steadier than wall time on a shared machine).

  off             `PulsarBroker(telemetry=False)`: no middleware at all
  context only    the broker's default where no exporter receives spans (`TraceContextOnly`): no spans, the
                  W3C context carried from message to handler to what it publishes
  no-op provider  FastStream's middleware with OpenTelemetry's no-op provider
  sampler off     FastStream's middleware with the SDK provider and `parentbased_always_off`, nothing exported
  recorded        the SDK provider, `parentbased_always_on`, no exporter (the default before the sampler)
  exported        recorded, and handed to a batch processor whose exporter discards them (what export adds,
                  short of the serialisation and the network)
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Annotated

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased
from opentelemetry.trace import NoOpTracerProvider
from opentelemetry.trace import TracerProvider as ApiTracerProvider

from fleet_contracts import topics
from fleet_shared.pulsar import InlineContext, PulsarBroker, PulsarMessage, TestPulsarBroker
from fleet_shared.pulsar.opentelemetry import PulsarTelemetryMiddleware

TOPIC = topics.DEVICE_EVENTS.name  # keyed by device id: the spans carry `fleet.device_id` as in a service


class Discard(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def exported() -> TracerProvider:
    provider = TracerProvider(sampler=ParentBased(ALWAYS_ON))
    provider.add_span_processor(BatchSpanProcessor(Discard(), max_queue_size=100_000))
    return provider


CONTEXT_ONLY = NoOpTracerProvider()  # a marker: the broker's default middleware, no provider configured

SETUPS: dict[str, Callable[[], ApiTracerProvider | None]] = {
    "off": lambda: None,
    "context only": lambda: CONTEXT_ONLY,
    "no-op provider": NoOpTracerProvider,
    "sampler off": lambda: TracerProvider(sampler=ParentBased(ALWAYS_OFF)),
    "recorded": lambda: TracerProvider(sampler=ParentBased(ALWAYS_ON)),
    "exported": exported,
}


async def cpu_per_message(provider: ApiTracerProvider | None, messages: int) -> float:
    """Process CPU seconds per message published and consumed through one broker."""
    if provider is None:
        broker = PulsarBroker(telemetry=False, logger=None)
    elif provider is CONTEXT_ONLY:
        broker = PulsarBroker(logger=None)  # this process sets no global provider: nothing is exported
    else:
        broker = PulsarBroker(middlewares=[PulsarTelemetryMiddleware(tracer_provider=provider)], logger=None)
    seen = 0

    @broker.subscriber(TOPIC, subscription="bench")
    async def on_event(message: Annotated[PulsarMessage, InlineContext("message")]) -> None:
        nonlocal seen
        seen += 1

    async with TestPulsarBroker(broker) as test:
        for i in range(50):  # warm up: first-call caches, the subscriber's setup
            await test.publish({"n": i}, TOPIC, key=f"dev-{i % 100}")
        started = time.process_time()
        for i in range(messages):
            await test.publish({"n": i}, TOPIC, key=f"dev-{i % 100}")
        spent = time.process_time() - started
    assert seen == messages + 50
    if isinstance(provider, TracerProvider):
        provider.shutdown()
    return spent / messages


async def main(messages: int, rounds: int) -> None:
    results: dict[str, list[float]] = {name: [] for name in SETUPS}
    for _ in range(rounds):
        for name, make in SETUPS.items():
            results[name].append(await cpu_per_message(make(), messages))
    off = statistics.median(results["off"])
    print(f"{messages} messages x {rounds} rounds, CPU µs per message (publish + consume), medians")
    for name, samples in results.items():
        median = statistics.median(samples)
        spread = f"{min(samples) * 1e6:.1f}-{max(samples) * 1e6:.1f}"
        print(f"  {name:<15} {median * 1e6:7.1f}  (+{(median - off) * 1e6:5.1f} over off; range {spread})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.messages, arguments.rounds))
