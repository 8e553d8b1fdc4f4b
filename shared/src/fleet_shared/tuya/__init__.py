"""Tuya edge: push-message codec, signatures, OpenAPI client (REFERENCE.md §1-7)."""
