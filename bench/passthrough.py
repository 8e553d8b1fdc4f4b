"""The raw pass-through ceiling for ingest (issue 15): plain pulsar-client, no decoding.

Consumes a Tuya project's push topic on its own subscription (Failover, as ingest does), publishes every
message's bytes on unchanged (same key and properties) and acknowledges it once the broker confirmed that
publish: ingest's delivery guarantee with none of its work (no decryption, validation, de-duplication,
contract events, metrics or traces). Whatever ingest does beyond this costs the difference. Run by
bench/ingest.py as its own process, like ingest, so their CPU and throughput compare one to one:

    python bench/passthrough.py PULSAR_URL ACCESS_ID OUT_TOPIC

The client's own fastest settings are used (batching by count and delay, not ingest's key-based batches),
so the ceiling is, if anything, high. Stops on SIGTERM.
"""

from __future__ import annotations

import signal
import sys
import threading

import pulsar

from fleet_contracts import topics


def main(url: str, access_id: str, out_topic: str) -> None:
    client = pulsar.Client(url, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))
    producer = client.create_producer(
        out_topic,
        batching_enabled=True,
        batching_max_messages=1000,
        batching_max_publish_delay_ms=10,
        max_pending_messages=1000,
        block_if_queue_full=True,
    )
    consumer = client.subscribe(
        topics.tuya_event_topic(access_id),
        topics.tuya_subscription(access_id),
        consumer_type=pulsar.ConsumerType.Failover,
        receiver_queue_size=1000,
        batch_receive_policy=pulsar.ConsumerBatchReceivePolicy(1000, -1, 10),
    )
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())

    def forward(msg: pulsar.Message) -> None:
        def confirmed(result: pulsar.Result, _msg_id: pulsar.MessageId) -> None:
            # Acked only once the copy is durable: the same at-least-once promise ingest keeps.
            if result == pulsar.Result.Ok:
                consumer.acknowledge(msg)
            else:
                consumer.negative_acknowledge(msg)

        producer.send_async(
            msg.data(), confirmed, properties=msg.properties(), partition_key=msg.partition_key()
        )

    while not stopping.is_set():
        for msg in consumer.batch_receive():
            forward(msg)
    producer.flush()
    client.close()


if __name__ == "__main__":
    main(*sys.argv[1:4])
