"""Read models for the HTTP API: firmware, a release with its regions, and progress per region and stage.

Progress comes from the counter documents (one read per release, no scan of the upgrades).
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from fleet_contracts.ota import ReleaseStage
from fleet_ota.domain.firmware import Firmware
from fleet_ota.domain.release import RegionRollout, StageCounts
from fleet_ota.ports import FirmwareRepository, ProgressRepository, RolloutRepository


class FirmwareView(BaseModel):
    firmware_id: str
    product_id: str
    channel: int
    version: str
    size_bytes: int
    md5: str
    signature: str
    url: str
    upgrade_type: int
    packet_timeout_s: int
    registered_at: datetime
    registered_by: str
    withdrawn_at: datetime | None

    @classmethod
    def of(cls, f: Firmware) -> FirmwareView:
        s = f.spec
        return cls(
            firmware_id=f.firmware_id,
            product_id=s.product_id,
            channel=s.channel,
            version=s.version,
            size_bytes=s.size_bytes,
            md5=s.md5,
            signature=s.signature,
            url=s.url,
            upgrade_type=int(s.upgrade_type),
            packet_timeout_s=s.packet_timeout_s,
            registered_at=f.registered_at,
            registered_by=f.registered_by,
            withdrawn_at=f.withdrawn_at,
        )


class StageProgress(BaseModel):
    stage: ReleaseStage
    targeted: int
    pending: int
    upgrading: int
    waiting: int
    succeeded: int
    failed: int
    cancelled: int
    success_rate: float | None
    failure_rate: float | None

    @classmethod
    def of(cls, stage: ReleaseStage, c: StageCounts) -> StageProgress:
        return cls(
            stage=stage,
            targeted=c.targeted,
            pending=c.pending,
            upgrading=c.upgrading,
            waiting=c.waiting,
            succeeded=c.succeeded,
            failed=c.failed,
            cancelled=c.cancelled,
            success_rate=c.success_rate,
            failure_rate=c.failure_rate,
        )


class RegionView(BaseModel):
    region: str
    status: str
    stage: ReleaseStage | None
    stage_started_at: datetime | None
    stages: list[StageProgress]


class ReleaseView(BaseModel):
    release_id: str
    firmware_id: str
    product_id: str
    channel: int
    version: str
    regions: list[RegionView]


_ORDER = list(ReleaseStage)


def release_view(
    rollouts: list[RegionRollout], progress: dict[tuple[str, ReleaseStage], StageCounts]
) -> ReleaseView:
    t = rollouts[0].target
    return ReleaseView(
        release_id=rollouts[0].release_id,
        firmware_id=t.firmware_id,
        product_id=t.product_id,
        channel=t.channel,
        version=t.version,
        regions=[
            RegionView(
                region=r.region,
                status=r.status.value,
                stage=r.stage,
                stage_started_at=r.stage_started_at,
                stages=[
                    StageProgress.of(stage, c)
                    for (region, stage), c in sorted(progress.items(), key=lambda kv: _ORDER.index(kv[0][1]))
                    if region == r.region
                ],
            )
            for r in rollouts
        ],
    )


class OtaViews:
    def __init__(
        self, firmware: FirmwareRepository, rollouts: RolloutRepository, progress: ProgressRepository
    ) -> None:
        self.firmware = firmware
        self.rollouts = rollouts
        self.progress = progress

    async def firmware_view(self, firmware_id: str) -> FirmwareView | None:
        f = await self.firmware.get(firmware_id)
        return None if f is None else FirmwareView.of(f)

    async def release(self, release_id: str) -> ReleaseView | None:
        rollouts = await self.rollouts.of_release(release_id)
        if not rollouts:
            return None
        return release_view(rollouts, await self.progress.of_release(release_id))
