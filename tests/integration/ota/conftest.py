"""Fixtures shared by ota's integration test modules."""

from tests.integration.ota.test_ota_store import db  # noqa: F401 - the database fixture (a fresh one per test)
