"""The one way a service builds its Tuya OpenAPI client from its settings: the project's access id and secret,
its data-centre region and the OpenAPI base URL (`FLEET_TUYA_*`, `FLEET_REGION`; the simulator's URL by
default). Each service chooses only its pacing:

    client = openapi_client(settings, default_rate_limit=RateLimit(rate=20.0, burst=20.0))
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from pydantic import SecretStr

from fleet_shared.tuya.openapi import DEFAULT_RATE_LIMIT, TuyaOpenApiClient
from fleet_shared.tuya.ratelimit import RateLimit


class TuyaProject(Protocol):
    """The settings naming the Tuya cloud project a service acts for (every `ServiceSettings` has them)."""

    @property
    def tuya_access_id(self) -> str: ...

    @property
    def tuya_access_secret(self) -> SecretStr: ...

    @property
    def region(self) -> str: ...

    @property
    def tuya_openapi_url(self) -> str: ...


def openapi_client(
    project: TuyaProject,
    *,
    rate_limits: Mapping[str, RateLimit] | None = None,
    default_rate_limit: RateLimit | None = DEFAULT_RATE_LIMIT,
) -> TuyaOpenApiClient:
    """The project's client (the caller closes it with `aclose()`). `rate_limits`: the client's own pacing per
    API (`"GET /v1.0/devices/{device_id}"`), `default_rate_limit` for every other API (None: unpaced).
    Raises ValueError when the access id or secret is empty."""
    return TuyaOpenApiClient(
        project.tuya_access_id,
        project.tuya_access_secret,
        region_code=project.region.lower(),
        base_url=project.tuya_openapi_url,
        rate_limits=rate_limits,
        default_rate_limit=default_rate_limit,
    )
