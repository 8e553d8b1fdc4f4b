"""The pairing slice of the Tuya OpenAPI client (REFERENCE §5): pairing tokens and their results.

Every call goes through the client's signed request core (`TuyaOpenApiClient.request`), so signing, the
access token, the per-API rate limit, retries of idempotent calls and redaction are the client's:

    async with TuyaOpenApiClient(access_id, access_secret, region_code="eu") as client:
        pairing = PairingApi(client)
        token = await pairing.create_token(uid=uid, time_zone_id="Europe/Berlin", home_id=home_id)
        result = await pairing.token_result(token.token)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fleet_shared.tuya.models import PairingResult, PairingToken, PairingType
from fleet_shared.tuya.openapi import TuyaOpenApiClient, _validate

__all__ = ["CREATE_TOKEN_PATH", "TOKEN_RESULT_PATH", "PairingApi"]

CREATE_TOKEN_PATH = "/v1.0/device/paring/token"  # noqa: S105 - a URL path (sic `paring`), not a password
TOKEN_RESULT_PATH = "/v1.0/device/paring/tokens/{token}"  # noqa: S105 - a URL path


class PairingApi:
    """Tuya's pairing APIs on one `TuyaOpenApiClient` (which it shares with the other slices)."""

    def __init__(self, client: TuyaOpenApiClient) -> None:
        self.client = client

    def __repr__(self) -> str:
        return f"PairingApi({self.client!r})"

    async def create_token(
        self,
        *,
        uid: str,
        time_zone_id: str,
        pairing_type: PairingType | str = PairingType.EZ,
        home_id: str | None = None,
        extension: Mapping[str, Any] | None = None,
    ) -> PairingToken:
        """`POST /v1.0/device/paring/token` (sic). Not idempotent: never retried blindly. The token's
        secret joins the client's redactor, so no later log line or error message can carry it."""
        body: dict[str, Any] = {
            "paring_type": str(PairingType(pairing_type)),
            "uid": uid,
            "time_zone_id": time_zone_id,
        }
        if home_id:
            body["home_id"] = home_id
        if extension:
            body["extension"] = dict(extension)
        result = await self.client.request("POST", CREATE_TOKEN_PATH, body=body, idempotent=False)
        token = _validate(PairingToken, result, "pairing token")
        self.client.redactor.add(token.secret.get_secret_value())
        return token

    async def token_result(self, token: str) -> PairingResult:
        """`GET /v1.0/device/paring/tokens/{token}`: the devices that paired with the token and those that
        failed (other API versions' shapes are accepted too)."""
        result = await self.client.request("GET", TOKEN_RESULT_PATH, path_params={"token": token})
        return _validate(PairingResult, result, "pairing result")
