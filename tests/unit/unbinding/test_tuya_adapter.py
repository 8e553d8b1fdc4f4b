"""unbinding's Tuya adapter over the real OpenAPI client and a fake Tuya cloud at the HTTP seam: device facts,
removal and reset, and the mapping of Tuya's answers onto `TuyaRefused` / `TuyaUnreachable`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from fleet_shared.tuya.openapi import RetryPolicy, TuyaOpenApiClient
from fleet_unbinding.adapters.tuya import TuyaDevices, TuyaPairingTokens
from fleet_unbinding.ports import TuyaRefused, TuyaUnreachable
from tests.unit.tuya.fake_tuya import ACCESS_ID, ACCESS_SECRET, FakeTuya
from tests.unit.unbinding.fakes import T0, FakeClock

pytestmark = pytest.mark.unit

DEVICE = {
    "id": "d1",
    "uid": "eu1700000000001abcd",
    "product_id": "p1",
    "active_time": 1_700_000_000,
    "online": True,
    "local_key": "never-shown",
}


async def _no_sleep(_: float) -> None:
    return None


@pytest.fixture
async def cloud() -> AsyncIterator[tuple[FakeTuya, TuyaOpenApiClient]]:
    fake = FakeTuya()
    client = TuyaOpenApiClient(
        ACCESS_ID,
        ACCESS_SECRET,
        base_url="https://tuya.test",
        http=fake.client(),
        default_rate_limit=None,
        retry=RetryPolicy(max_attempts=2),
        sleep=_no_sleep,
    )
    yield fake, client
    await client.aclose()


async def test_lookup_reads_owner_activation_and_product(cloud: tuple[FakeTuya, TuyaOpenApiClient]) -> None:
    fake, client = cloud
    fake.routes[("GET", "/v1.0/devices/d1")] = lambda _: DEVICE
    fake.routes[("GET", "/v1.0/devices/d2")] = lambda _: {**DEVICE, "id": "d2", "uid": ""}
    devices = TuyaDevices(client)
    facts = await devices.lookup("d1")
    assert facts is not None
    assert (facts.product_id, facts.owner_uid, facts.active_time, facts.online) == (
        "p1",
        "eu1700000000001abcd",
        1_700_000_000,
        True,
    )
    unbound = await devices.lookup("d2")
    assert unbound is not None
    assert unbound.owner_uid is None


async def test_unknown_devices_and_errors_map_to_what_the_state_machine_needs(
    cloud: tuple[FakeTuya, TuyaOpenApiClient],
) -> None:
    fake, client = cloud
    devices = TuyaDevices(client)
    fake.script["/v1.0/devices/gone"] = [2010]
    assert await devices.lookup("gone") is None
    fake.script["/v1.0/devices/denied"] = [1106]
    with pytest.raises(TuyaRefused) as refused:
        await devices.lookup("denied")
    assert refused.value.code == "1106"
    fake.script["/v1.0/devices/down"] = [("http", 503), ("http", 503)]
    with pytest.raises(TuyaUnreachable):
        await devices.lookup("down")


async def test_removal_uses_delete_or_the_reset_variant_and_is_never_retried_blindly(
    cloud: tuple[FakeTuya, TuyaOpenApiClient],
) -> None:
    fake, client = cloud
    fake.routes[("DELETE", "/v2.0/cloud/thing/d1")] = lambda _: True
    fake.routes[("POST", "/v2.0/cloud/thing/d1/reset")] = lambda _: True
    devices = TuyaDevices(client)
    await devices.remove("d1", reset=False)
    await devices.remove("d1", reset=True)
    assert fake.counts["/v2.0/cloud/thing/d1"] == 1
    assert fake.counts["/v2.0/cloud/thing/d1/reset"] == 1

    fake.script["/v2.0/cloud/thing/d2"] = [1199]
    with pytest.raises(TuyaRefused) as limited:
        await devices.remove("d2", reset=False)
    assert limited.value.code == "1199"
    assert fake.counts["/v2.0/cloud/thing/d2"] == 1  # not idempotent: the client does not retry it

    fake.script["/v2.0/cloud/thing/d3"] = [("http", 502)]
    with pytest.raises(TuyaUnreachable):
        await devices.remove("d3", reset=False)
    fake.routes[("DELETE", "/v2.0/cloud/thing/d4")] = lambda _: False
    with pytest.raises(TuyaUnreachable):
        await devices.remove("d4", reset=False)


async def test_qr_tokens_and_their_failed_scanners(cloud: tuple[FakeTuya, TuyaOpenApiClient]) -> None:
    fake, client = cloud
    fake.routes[("POST", "/v1.0/device/paring/token")] = lambda _: {
        "region": "EU",
        "token": "tok1",
        "secret": "s3cr",
        "expire_time": 600,
    }
    fake.routes[("GET", "/v1.0/device/paring/tokens/tok1")] = lambda _: {
        "success": [],
        "failed": [{"device_id": "cam1", "code": "113"}, {"device_id": "cam2", "code": 2001}],
    }
    tokens = TuyaPairingTokens(client, FakeClock())
    token = await tokens.issue(uid="app-uid", home_id=None, time_zone_id="Etc/UTC")
    assert token.token == "tok1"
    assert token.assembled.get_secret_value() == "EUtok1s3cr"
    assert "s3cr" not in repr(token)
    assert token.expires_at == T0 + timedelta(seconds=600)
    assert await tokens.failed_devices("tok1") == [("cam1", "113"), ("cam2", "2001")]


async def test_removals_under_way_are_capped(cloud: tuple[FakeTuya, TuyaOpenApiClient]) -> None:
    """A cloud that stalls holds at most `in_flight` of our removals, not every call paced meanwhile."""
    _, client = cloud
    running, most = 0, 0
    answer = asyncio.Event()

    async def remove_device(device_id: str, *, legacy: bool = False) -> bool:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await answer.wait()  # the cloud stalls
        running -= 1
        return True

    client.remove_device = remove_device  # type: ignore[method-assign]
    devices = TuyaDevices(client, in_flight=2)
    calls = [asyncio.create_task(devices.remove(f"d{i}", reset=False)) for i in range(5)]
    for _ in range(10):
        await asyncio.sleep(0)
    assert running == 2
    answer.set()
    await asyncio.gather(*calls)
    assert (most, running) == (2, 0)
