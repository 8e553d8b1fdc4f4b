"""ota's use of Tuya's OTA OpenAPI through the shared client (REFERENCE.md section 7)."""

from __future__ import annotations

from datetime import UTC, datetime

from fleet_contracts.device import OtaUpgradeStatus
from fleet_ota.ports import UpgradeRefused
from fleet_shared.tuya.errors import TuyaApiError
from fleet_shared.tuya.openapi import TuyaOpenApiClient


def _status(code: int | None) -> OtaUpgradeStatus:
    """Tuya's code as the contract's enum; a code we do not know says nothing is under way."""
    try:
        return OtaUpgradeStatus(code) if code is not None else OtaUpgradeStatus.NO_UPDATE
    except ValueError:
        return OtaUpgradeStatus.NO_UPDATE


class TuyaOtaApi:
    def __init__(self, client: TuyaOpenApiClient) -> None:
        self.client = client

    async def confirm_upgrade(self, device_id: str, channel: int) -> None:
        """`POST /v2.0/cloud/thing/{id}/firmware/{channel}`. Tuya's error answers mean it did not act
        (`UpgradeRefused`); transport errors leave the outcome unknown and propagate (the shared client never
        retries this non-idempotent call blindly)."""
        try:
            accepted = await self.client.confirm_upgrade(device_id, channel)
        except TuyaApiError as e:
            raise UpgradeRefused(e.code, type(e).__name__) from e
        if not accepted:
            raise UpgradeRefused(None, "Tuya answered without starting the upgrade")

    async def progress(self, device_id: str, channel: int) -> tuple[OtaUpgradeStatus, int | None]:
        p = await self.client.get_upgrade_progress(device_id, channel)
        return _status(p.upgrade_status), p.progress

    async def current_versions(self, device_id: str) -> dict[int, str]:
        """What each channel of the device runs, as the device last reported it to Tuya."""
        return {
            f.channel: f.current_version
            for f in await self.client.get_firmware(device_id)
            if f.current_version
        }

    async def upgrade_ended_at(self, device_id: str, channel: int) -> datetime | None:
        """The channel's `last_upgrade_time` (REFERENCE.md section 7 names it, undefined; the simulator sets
        it when an upgrade ends, in ms). 0 or absent: None. A value below 10^11 is read as seconds."""
        for f in await self.client.get_firmware(device_id):
            if f.channel == channel and f.last_upgrade_time:
                t = f.last_upgrade_time
                return datetime.fromtimestamp(t / 1000 if t >= 10**11 else t, UTC)
        return None
