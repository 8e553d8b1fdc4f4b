"""ingest's integration fixtures: a throwaway Tuya project on the real Pulsar, and its topic adapter."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator

import pytest

from fleet_ingest.adapters.tuya_consumer import PulsarTuyaSource
from fleet_shared.provisioning import ProvisioningError, PulsarAdmin, provision
from tests.support import Stack


@pytest.fixture
def access_id(stack: Stack, unique: str) -> Iterator[str]:
    """A throwaway Tuya project with Tuya's topic layout (tenant = access id, `out/event`, 11 partitions)."""
    access_id = f"ingit{unique}"
    provision(stack.pulsar_admin_url, access_id)
    yield access_id
    with contextlib.suppress(ProvisioningError):  # the tenant and namespace are left, empty
        PulsarAdmin(stack.pulsar_admin_url).call(
            "DELETE", f"persistent/{access_id}/out/event/partitions?force=true"
        )


@pytest.fixture
async def source(stack: Stack, access_id: str) -> AsyncIterator[PulsarTuyaSource]:
    source = PulsarTuyaSource(
        service_url=stack.pulsar_url, access_id=access_id, access_secret=None, authenticate=False
    )
    yield source
    await source.close()
