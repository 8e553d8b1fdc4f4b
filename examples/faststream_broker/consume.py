"""Keep each device's online/offline state from tuya-fleet's presence changes, with FastStream.

    python consume.py --url pulsar://localhost:6650 --db presence.sqlite3

FastStream has no Apache Pulsar broker of its own (it ships Kafka, RabbitMQ, NATS, Redis and MQTT), so this
uses tuya-fleet's: `fleet_shared.pulsar.PulsarBroker`, with the typed contracts of `fleet_contracts`. Install
both from this repository (`pip install ./contracts ./shared`, or as git dependencies).

At least once in, once in effect: the event id is recorded in the same SQLite transaction as the state it
brings, and FastStream acknowledges the message only when the handler returns (the broker's default
acknowledgement policy: a raised error is a negative acknowledgement, retried and then dead-lettered).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sqlite3
from typing import Annotated, Any

from faststream import Context, FastStream
from pydantic import ValidationError

from fleet_contracts import topics
from fleet_contracts.outbox import EVENT_ID_PROPERTY
from fleet_contracts.status import PresenceChangedEvent
from fleet_shared.pulsar import ConsumerType, DeadLetter, InitialPosition, PulsarBroker, PulsarMessage
from fleet_shared.pulsar.opentelemetry import PulsarTelemetryMiddleware

TOPIC = topics.STATUS_PRESENCE_EVENTS

SCHEMA = """
CREATE TABLE IF NOT EXISTS handled_events (event_id TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS device_presence (
    device_id TEXT PRIMARY KEY,
    online INTEGER NOT NULL,
    changed_at_ms INTEGER NOT NULL     -- device time: a later change wins, whatever the arrival order
);
"""


class PresenceStore:
    """Each device's latest presence, and the ids of the events already applied.

    A local SQLite commit takes well under a millisecond, so it runs on the event loop here; with a
    networked database use its async driver.
    """

    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)  # transactions are begun explicitly
        self.db.executescript(SCHEMA)

    def apply_once(self, event_id: str, event: PresenceChangedEvent) -> bool:
        """Apply one presence change unless its id was applied before; False for a duplicate."""
        p = event.data
        with self.db:  # BEGIN ... COMMIT, or ROLLBACK on error
            self.db.execute("BEGIN IMMEDIATE")
            if self.db.execute("INSERT OR IGNORE INTO handled_events VALUES (?)", (event_id,)).rowcount == 0:
                return False  # `with` commits an empty transaction
            self.db.execute(
                "INSERT INTO device_presence VALUES (?, ?, ?) ON CONFLICT (device_id) DO UPDATE SET"
                " online = excluded.online, changed_at_ms = excluded.changed_at_ms"
                " WHERE excluded.changed_at_ms > device_presence.changed_at_ms",
                (p.device_id, int(p.online), p.changed_at_ms),
            )
        return True


def build_app(
    url: str, topic: str, subscription: str, store: PresenceStore, max_redeliveries: int
) -> FastStream:
    # The telemetry middleware continues the producer's trace (W3C `traceparent` in the message properties)
    # whenever an OpenTelemetry SDK is configured; without one it costs next to nothing.
    # FastStream logs every message received and processed at `log_level`: kept out of the way here.
    broker = PulsarBroker(url, middlewares=[PulsarTelemetryMiddleware()], log_level=logging.DEBUG)

    @broker.subscriber(
        topic,
        subscription=subscription,
        subscription_type=ConsumerType.KeyShared,  # in order per device, devices spread over instances
        initial_position=InitialPosition.Earliest,  # a new copy starts from everything retained
        dead_letter=DeadLetter(max_redeliveries=max_redeliveries),  # to <topic>-<subscription>-DLQ
    )
    async def on_presence_event(
        body: dict[str, Any], message: Annotated[PulsarMessage, Context("message")]
    ) -> None:
        event_id = message.headers.get(EVENT_ID_PROPERTY) or str(body.get("id"))
        if body.get("type") not in TOPIC.envelope_classes():  # new types may appear on a topic: skip them
            print(f"skipped {event_id} {body.get('type')}", flush=True)
            return
        try:
            event = TOPIC.adapter.validate_python(body)
        except ValidationError as e:  # retrying cannot fix a broken contract: dead-letter it at once
            print(f"rejected {event_id}: {e.error_count()} validation errors", flush=True)
            await message.reject()
            return
        if not store.apply_once(event_id, event):
            print(f"duplicate {event_id}", flush=True)
            return
        state = "online" if event.data.online else "offline"
        print(
            f"handled {event_id} {event.type} {event.data.device_id} {state} at={event.data.changed_at_ms}",
            flush=True,
        )

    return FastStream(broker)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--url", default="pulsar://localhost:6650")
    parser.add_argument("--topic", default=TOPIC.name)
    parser.add_argument("--subscription", default="presence-copy")
    parser.add_argument("--db", default="presence.sqlite3")
    parser.add_argument("--max-redeliveries", type=int, default=5)
    args = parser.parse_args()
    app = build_app(args.url, args.topic, args.subscription, PresenceStore(args.db), args.max_redeliveries)
    asyncio.run(app.run())  # until SIGINT/SIGTERM; then in-flight handlers finish and the client closes
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
