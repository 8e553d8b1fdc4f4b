"""The one Tuya OpenAPI client factory: every service's client comes from its settings the same way, and only
its pacing differs."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from fleet_shared.service import ServiceSettings
from fleet_shared.tuya.factory import openapi_client
from fleet_shared.tuya.openapi import DEFAULT_RATE_LIMIT
from fleet_shared.tuya.ratelimit import RateLimit

pytestmark = pytest.mark.unit

SECRET = "0123456789abcdef0123456789abcdef"
LOOKUP = "GET /v1.0/devices/{device_id}"


def project(**changes: object) -> ServiceSettings:
    values: dict[str, object] = {
        "tuya_access_id": "acc1",
        "tuya_access_secret": SecretStr(SECRET),
        "region": "US",
        "tuya_openapi_url": "http://tuya-sim:9010/",
    }
    return ServiceSettings.model_validate(values | changes)


async def test_the_client_acts_for_the_configured_project_region_and_url() -> None:
    client = openapi_client(project())
    try:
        assert client.access_id == "acc1"
        assert client.region.code == "us"  # the settings' upper-case region, as Tuya's codes are spelled
        assert client.base_url == "http://tuya-sim:9010"
        assert SECRET not in repr(client.__dict__)
    finally:
        await client.aclose()


async def test_pacing_is_the_clients_default_unless_the_service_chooses_its_own() -> None:
    default = openapi_client(project())
    lookup = RateLimit(20.0, burst=1.0)
    own = openapi_client(project(), rate_limits={LOOKUP: lookup}, default_rate_limit=None)
    try:
        assert default._limiter._limit_for("GET", "/v1.0/devices/{device_id}")[1] == DEFAULT_RATE_LIMIT
        assert own._limiter._limit_for("GET", "/v1.0/devices/{device_id}")[1] == lookup
        assert own._limiter._limit_for("POST", "/v1.0/devices/{device_id}/commands")[1] is None
    finally:
        await default.aclose()
        await own.aclose()


def test_a_project_without_a_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="access_secret"):
        openapi_client(project(tuya_access_secret=SecretStr("")))
