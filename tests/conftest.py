"""Test-wide settings: where the real servers are.

The README's test command (`just test`) starts Apache Pulsar and FerretDB and exports their addresses;
set the same variables to run against servers of your own (a real MongoDB, say).
"""

from __future__ import annotations

import os
import uuid

import pytest

from tests.support import Stack


@pytest.fixture(scope="session")
def stack() -> Stack:
    """Addresses of the real servers; integration and e2e tests fail loudly when they are absent."""
    missing = [
        v for v in ("FLEET_PULSAR_URL", "FLEET_PULSAR_ADMIN_URL", "FLEET_MONGODB_URI") if v not in os.environ
    ]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not set: run the suite with `just test` (it starts Pulsar and FerretDB)",
            pytrace=False,
        )
    return Stack(
        pulsar_url=os.environ["FLEET_PULSAR_URL"],
        pulsar_admin_url=os.environ["FLEET_PULSAR_ADMIN_URL"],
        mongodb_uri=os.environ["FLEET_MONGODB_URI"],
    )


@pytest.fixture
def unique() -> str:
    """A short random suffix so tests never share topics, subscriptions or databases."""
    return uuid.uuid4().hex[:10]
