"""ingest's edges: Tuya's Pulsar topic, the internal bus, the MongoDB dedup store, Prometheus metrics."""
