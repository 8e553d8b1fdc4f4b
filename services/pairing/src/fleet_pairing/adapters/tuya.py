"""Tuya's pairing APIs through the shared OpenAPI client's pairing slice (signing, rate limits, retries,
typed errors); removals through the client itself.

Mode mapping for `POST /v1.0/device/paring/token` (`paring_type` knows EZ, AP and BLE): EZ and camera QR
take an EZ token (the camera guide's `getTokenWithHomeId`, the same token the app uses for EZ); AP an AP
token; BLE and combo a BLE token with the device uuid in `extension.uuid` (required by Tuya for BLE).
"""

from __future__ import annotations

from datetime import timedelta

from fleet_contracts.pairing import PairingMode
from fleet_pairing.domain.credentials import IssuedToken
from fleet_pairing.ports import ActivatedDevice, FailedDevice, NewToken, TokenResult
from fleet_shared.tuya.models import PairingType
from fleet_shared.tuya.openapi import TuyaOpenApiClient
from fleet_shared.tuya.pairing import PairingApi

PAIRING_TYPE = {
    PairingMode.EZ: PairingType.EZ,
    PairingMode.QR: PairingType.EZ,
    PairingMode.AP: PairingType.AP,
    PairingMode.BLE: PairingType.BLE,
    PairingMode.COMBO: PairingType.BLE,
}


class TuyaPairingApi:
    """Implements `TuyaPairing` on a `TuyaOpenApiClient`."""

    def __init__(self, client: TuyaOpenApiClient) -> None:
        self.client = client
        self.pairing = PairingApi(client)

    async def create_token(
        self, *, owner_uid: str, home_id: str, time_zone_id: str, mode: PairingMode, device_uuid: str | None
    ) -> NewToken:
        token = await self.pairing.create_token(
            uid=owner_uid,
            time_zone_id=time_zone_id,
            pairing_type=PAIRING_TYPE[mode],
            home_id=home_id,
            extension={"uuid": device_uuid} if device_uuid else None,
        )
        lifetime = timedelta(seconds=token.expire_time) if token.expire_time else None
        return NewToken(IssuedToken(token.region, token.token, token.secret), lifetime)

    async def token_result(self, token: str) -> TokenResult:
        result = await self.pairing.token_result(token)
        return TokenResult(
            success=[
                ActivatedDevice(d.device_id, d.product_id, d.name) for d in result.success if d.device_id
            ],
            failed=[
                FailedDevice(code=f.code or "unknown", device_id=f.device_id, name=f.name, message=f.msg)
                for f in result.failed
            ],
        )

    async def remove_device(self, device_id: str) -> bool:
        return await self.client.remove_device(device_id)
