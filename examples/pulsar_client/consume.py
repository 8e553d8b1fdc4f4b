"""Keep a local copy of every device's DP values from tuya-fleet's shadow changes, with nothing but
pulsar-client and the standard library (no tuya-fleet package: the event is read as plain JSON).

    python consume.py --url pulsar://localhost:6650 --db shadows.sqlite3

Delivery is at least once; the effect happens once: each event's id is recorded in the same SQLite
transaction as the DP values it brings, and the message is acknowledged only after that commit. A redelivery
or a republished duplicate finds its id already recorded and is acknowledged without effect.
"""

from __future__ import annotations

import argparse
import json
import signal
import sqlite3
import sys
from types import FrameType
from typing import Any

import pulsar

TOPIC = "persistent://fleet/status/shadow-events"
EVENT_ID_PROPERTY = "event-id"  # the envelope id, set by tuya-fleet's outbox relays
SHADOW_CHANGED = "status.shadow.changed.v1"

SCHEMA = """
CREATE TABLE IF NOT EXISTS handled_events (event_id TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS device_dps (
    device_id TEXT NOT NULL,
    code TEXT NOT NULL,
    value TEXT NOT NULL,            -- JSON
    device_time_ms INTEGER NOT NULL,
    shadow_version INTEGER NOT NULL,
    PRIMARY KEY (device_id, code)
);
"""


class Store:
    """The latest value of each DP per device, and the ids of the events already applied."""

    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)  # transactions are begun explicitly
        self.db.executescript(SCHEMA)

    def handled(self, event_id: str) -> bool:
        return (
            self.db.execute("SELECT 1 FROM handled_events WHERE event_id = ?", (event_id,)).fetchone()
            is not None
        )

    def apply_once(self, event_id: str, data: dict[str, Any]) -> bool:
        """Apply one shadow change unless its id was applied before; False for a duplicate."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            cur = self.db.execute("INSERT OR IGNORE INTO handled_events VALUES (?)", (event_id,))
            if cur.rowcount == 0:
                self.db.execute("ROLLBACK")
                return False
            for change in data["changes"]:
                new = change["new"]
                self.db.execute(
                    "INSERT INTO device_dps VALUES (?, ?, ?, ?, ?) ON CONFLICT (device_id, code)"
                    " DO UPDATE SET value = excluded.value, device_time_ms = excluded.device_time_ms,"
                    " shadow_version = excluded.shadow_version"
                    " WHERE excluded.shadow_version > device_dps.shadow_version",  # never go back in time
                    (
                        data["device_id"],
                        change["code"],
                        json.dumps(new["value"]),
                        new["device_time_ms"],
                        data["shadow_version"],
                    ),
                )
            self.db.execute("COMMIT")
            return True
        except BaseException:
            self.db.execute("ROLLBACK")
            raise


def handle(msg: pulsar.Message, store: Store) -> str:
    """What became of one message, as a line to print; raises if it cannot be handled (it is retried)."""
    properties = msg.properties()
    event_id = properties.get(EVENT_ID_PROPERTY)
    if event_id and store.handled(event_id):  # a duplicate is dropped without even parsing it
        return f"duplicate {event_id}"
    event = json.loads(msg.data())
    if event.get("specversion") != "1.0":
        raise ValueError("not a CloudEvents 1.0 envelope")
    event_id = event_id or event["id"]
    if event["type"] != SHADOW_CHANGED:  # new types may appear on a topic: skip them, do not fail
        return f"skipped {event_id} {event['type']}"
    data = event["data"]
    if not store.apply_once(event_id, data):
        return f"duplicate {event_id}"
    dps = " ".join(f"{c['code']}={json.dumps(c['new']['value'])}" for c in data["changes"])
    # W3C traceparent `00-<trace id>-<span id>-<flags>`: the trace id finds the producer's trace
    traceparent = properties.get("traceparent", "").split("-")
    trace = traceparent[1] if len(traceparent) == 4 else "-"
    device, version = data["device_id"], data["shadow_version"]
    return f"handled {event_id} {event['type']} {device} v{version} {dps} trace={trace}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--url", default="pulsar://localhost:6650")
    parser.add_argument("--topic", default=TOPIC)
    parser.add_argument("--subscription", default="shadow-copy")
    parser.add_argument("--db", default="shadows.sqlite3")
    parser.add_argument("--max-redeliveries", type=int, default=5, help="then to <topic>-<subscription>-DLQ")
    args = parser.parse_args()

    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    store = Store(args.db)
    client = pulsar.Client(args.url, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Warn))
    consumer = client.subscribe(
        args.topic,
        args.subscription,
        consumer_type=pulsar.ConsumerType.KeyShared,  # in order per device, devices spread over instances
        initial_position=pulsar.InitialPosition.Earliest,  # a new copy starts from everything retained
        negative_ack_redelivery_delay_ms=1000,
        dead_letter_policy=pulsar.ConsumerDeadLetterPolicy(max_redeliver_count=args.max_redeliveries),
    )
    print(f"reading {args.topic} as {args.subscription}", file=sys.stderr, flush=True)
    try:
        while not stopping:
            try:
                msg = consumer.receive(timeout_millis=500)
            except pulsar.Timeout:
                continue
            try:
                outcome = handle(msg, store)
            except Exception as e:  # a bad message or our own failure: retried, then dead-lettered
                print(f"failed {msg.message_id()}: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
                consumer.negative_acknowledge(msg)
                continue
            print(outcome, flush=True)
            consumer.acknowledge(msg)  # only now: the effect is committed
    finally:
        consumer.close()
        client.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
