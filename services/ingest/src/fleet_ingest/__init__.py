"""ingest: the only consumer of Tuya's message push stream.

Decrypts and validates each Tuya message, de-duplicates it, maps it to a contract event keyed by device id and
publishes it to `topics.DEVICE_EVENTS`; acknowledges Tuya only once the internal publish is confirmed. What it
cannot decode goes to `topics.INGEST_TUYA_DEAD_LETTER` with the reason, byte for byte.

    domain/      pure: Tuya message -> contract event, dedup keys and the seen-window, dead-letter records
    adapters/    Tuya consumer (pulsar.asyncio), event publisher, MongoDB dedup store, metrics
    handlers.py  plain functions: one delivery -> an outcome (publish, duplicate, dead-letter)
    entrypoints/ the consume pipeline and the FastAPI app (/healthz, /readyz, /metrics)
    bootstrap.py wiring from settings
"""
