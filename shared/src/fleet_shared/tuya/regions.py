"""Tuya data centres: OpenAPI base URLs (REFERENCE §4) and message-push Pulsar hosts (REFERENCE §1)."""

from __future__ import annotations

from dataclasses import dataclass

PULSAR_NATIVE_PORT = 7285  # TLS (pulsar+ssl)
PULSAR_WS_PORT = 8285


@dataclass(frozen=True)
class Region:
    code: str
    name: str
    openapi_base_url: str
    pulsar_host: str
    # False where only third-party sources name the host (Singapore).
    pulsar_host_verified: bool = True

    @property
    def pulsar_url(self) -> str:
        return f"pulsar+ssl://{self.pulsar_host}:{PULSAR_NATIVE_PORT}"

    @property
    def pulsar_ws_url(self) -> str:
        return f"wss://{self.pulsar_host}:{PULSAR_WS_PORT}/"


REGIONS: dict[str, Region] = {
    r.code: r
    for r in (
        Region("cn", "China", "https://openapi.tuyacn.com", "mqe.tuyacn.com"),
        Region("us", "US West", "https://openapi.tuyaus.com", "mqe.tuyaus.com"),
        Region("us-e", "US East", "https://openapi-ueaz.tuyaus.com", "mqe.tuyaus.com"),
        Region("eu", "EU Central", "https://openapi.tuyaeu.com", "mqe.tuyaeu.com"),
        Region("eu-w", "EU West", "https://openapi-weaz.tuyaeu.com", "mqe.tuyaeu.com"),
        Region("in", "India", "https://openapi.tuyain.com", "mqe.tuyain.com"),
        Region("sg", "Singapore", "https://openapi-sg.iotbing.com", "mqe-sg.iotbing.com", False),
    )
}


def region(code: str) -> Region:
    """Looks a region up by code (`cn`, `us`, `us-e`, `eu`, `eu-w`, `in`, `sg`; case-insensitive)."""
    try:
        return REGIONS[code.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown Tuya region {code!r}; known: {', '.join(REGIONS)}") from None
