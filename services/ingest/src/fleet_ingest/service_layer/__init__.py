"""ingest's service layer: handlers as plain functions, and the consume loop that orchestrates them."""
