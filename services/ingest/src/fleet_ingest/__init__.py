"""ingest: the only consumer of Tuya's message push stream.

Decrypts and validates each Tuya message, de-duplicates it, maps it to a contract event keyed by device id and
publishes it to `topics.DEVICE_EVENTS`; acknowledges Tuya only once the internal publish is confirmed. What it
cannot decode goes to `topics.INGEST_TUYA_DEAD_LETTER` with the reason, byte for byte.

    domain/         pure: Tuya message -> contract event, dedup keys and the seen-window, dead-letter records
    service_layer/  handlers.py (one delivery -> publish or dead-letter, plain functions), the consume loop
                    (pipeline.py) and its parts: flow.py (what travels between stages), lookups.py (batched
                    dedup-store lookups), dedup.py (the duplicate decision), messages.py (event and
                    dead-letter bodies), recorder.py (seen keys written to the store)
    ports.py        what the service layer needs: Tuya source, event sink, dedup store, metrics, tracing
    adapters/       Tuya consumer (pulsar.asyncio), event publisher (the shared producer's confirmed sends),
                    MongoDB dedup store, Prometheus metrics, OpenTelemetry tracing
    entrypoints/    the FastAPI app (/healthz, /readyz, /metrics) running the pipeline in its lifespan
    bootstrap.py    wiring from settings
"""
