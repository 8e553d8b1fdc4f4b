"""Pure ingest logic: no I/O, no clocks except those passed in."""
