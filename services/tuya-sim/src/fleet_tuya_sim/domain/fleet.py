"""The virtual fleet: homes, owners and devices of one Tuya project, and every rule about them.

Pure: no clock (callers pass `now_ms`), no I/O, and every random choice comes from one generator seeded by
the fleet's seed, so the same seed and the same sequence of operations give the same fleet and the same
messages (timestamps aside). Secrets that need real randomness (pairing token/secret) are passed in.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from fleet_contracts.tuya import OtaUpgradeStatus
from fleet_tuya_sim.domain import errors
from fleet_tuya_sim.domain.binding import BindingMode, RebindDecision, rebind_decision
from fleet_tuya_sim.domain.device import Device, DpState, Home, LogEntry, LogType
from fleet_tuya_sim.domain.errors import CloudRefusal
from fleet_tuya_sim.domain.events import (
    DeviceBound,
    DeviceRenamed,
    DeviceUnbound,
    DpReading,
    DpRenamed,
    DpReported,
    Event,
    OtaProgressed,
    WentOffline,
    WentOnline,
)
from fleet_tuya_sim.domain.ota import FirmwareRelease, OtaJob, OtaOutcome, version_key
from fleet_tuya_sim.domain.ota_faults import OtaFaults
from fleet_tuya_sim.domain.pairing import (
    DATA_CENTRE,
    FAIL_STRONG_BOUND,
    FAIL_TOKEN_EXPIRED,
    FAIL_TOKEN_SPENT,
    PAIRING_REGION,
    PairingToken,
    split_assembled,
)
from fleet_tuya_sim.domain.products import CATALOG, DpSchema, Product
from fleet_tuya_sim.domain.provisioning import BLE_DEVICE_NOT_FOUND

DEFAULT_WAKE_WINDOW_MS = 30_000


@dataclass(frozen=True)
class FleetSpec:
    seed: int = 1
    devices: int = 100
    homes: int = 10
    regions: tuple[str, ...] = ("eu", "us")
    product_ids: tuple[str, ...] = ()  # empty: the whole catalog
    unbound: int = 0  # factory-fresh devices, not yet paired (ready for pairing scenarios)
    online_ratio: float = 0.9
    binding_mode: BindingMode | None = None  # overrides each product's default


@dataclass(frozen=True)
class ActivationOutcome:
    device_id: str
    ok: bool
    code: str = ""
    msg: str = ""
    decision: RebindDecision | None = None
    events: tuple[Event, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """As the control API answers it."""
        decision = self.decision.value if self.decision else None
        return {
            "device_id": self.device_id,
            "ok": self.ok,
            "code": self.code,
            "msg": self.msg,
            "decision": decision,
        }


@dataclass(frozen=True)
class ChannelFirmware:
    """One upgrade channel of one device, as `GET /v2.0/cloud/thing/{id}/firmware` reports it."""

    channel: int
    current_version: str
    release: FirmwareRelease | None
    job: OtaJob | None

    @property
    def upgrade_status(self) -> OtaUpgradeStatus:
        if self.job is not None:
            # Tuya's 5 while the command waits for a sleepy or offline device to wake up
            return OtaUpgradeStatus.WAITING_FOR_WAKE_UP if self.job.waiting else self.job.status
        if self.release is not None and version_key(self.release.version) > version_key(self.current_version):
            return OtaUpgradeStatus.READY
        return OtaUpgradeStatus.NO_UPDATE

    @property
    def target_version(self) -> str:
        if self.job is not None:
            return self.job.to_version
        return self.release.version if self.release is not None else self.current_version


@dataclass
class OtaSettings:
    step_ms: int = 1000
    step_pct: int = 20
    failure_ratio: float = 0.0
    timeout_ratio: float = 0.0


@dataclass
class Fleet:
    spec: FleetSpec
    products: dict[str, Product]
    rng: random.Random
    homes: dict[str, Home] = field(default_factory=dict)
    devices: dict[str, Device] = field(default_factory=dict)
    tokens: dict[str, PairingToken] = field(default_factory=dict)
    releases: dict[tuple[str, int], FirmwareRelease] = field(default_factory=dict)
    ota_jobs: dict[tuple[str, int], OtaJob] = field(default_factory=dict)
    ota_plans: dict[tuple[str, int], OtaOutcome] = field(default_factory=dict)
    ota: OtaSettings = field(default_factory=OtaSettings)
    ota_faults: OtaFaults = field(default_factory=OtaFaults)
    # Previous owners told that a medium-bound device was paired by someone else.
    notifications: list[dict[str, Any]] = field(default_factory=list)
    wake_window_ms: int = DEFAULT_WAKE_WINDOW_MS
    _serial: int = 0

    # -- creation -------------------------------------------------------------------------------------

    @classmethod
    def create(cls, spec: FleetSpec, now_ms: int, catalog: Iterable[Product] = CATALOG) -> Fleet:
        products = {p.product_id: p for p in catalog}
        if spec.product_ids:
            unknown = [pid for pid in spec.product_ids if pid not in products]
            if unknown:
                raise CloudRefusal(errors.PARAM_ILLEGAL, f"unknown product ids: {', '.join(unknown)}")
            products = {pid: products[pid] for pid in spec.product_ids}
        if not spec.regions:
            raise CloudRefusal(errors.PARAM_ILLEGAL, "at least one region")
        fleet = cls(spec=spec, products=products, rng=random.Random(spec.seed))
        for _ in range(max(1, spec.homes)):
            fleet.add_home(fleet._new_uid(), fleet.rng.choice(spec.regions))
        home_list = list(fleet.homes.values())
        product_list = list(products.values())
        for i in range(spec.devices):
            product = product_list[i % len(product_list)]
            home = fleet.rng.choice(home_list)
            device = fleet._new_device(product, home.region, now_ms)
            device.uid, device.home_id, device.time_zone = home.owner_uid, home.home_id, home.time_zone
            device.active_time = device.create_time + fleet.rng.randint(60, 86_400)
            device.online = fleet.rng.random() < spec.online_ratio
            if device.online and device.low_power:
                device.awake_until = now_ms + fleet.wake_window_ms
        for i in range(spec.unbound):
            fleet._new_device(product_list[i % len(product_list)], fleet.rng.choice(spec.regions), now_ms)
        return fleet

    def add_home(self, owner_uid: str, region: str, name: str = "") -> Home:
        home_id = str(self.rng.randint(10_000_000, 99_999_999))
        while home_id in self.homes:
            home_id = str(self.rng.randint(10_000_000, 99_999_999))
        home = Home(
            home_id=home_id, name=name or f"Home {len(self.homes) + 1}", owner_uid=owner_uid, region=region
        )
        self.homes[home_id] = home
        return home

    def spawn(self, product_id: str, count: int, region: str, now_ms: int) -> list[Device]:
        """Factory-fresh devices of a product, not bound to anyone: candidates for pairing."""
        product = self._product(product_id)
        return [self._new_device(product, region, now_ms) for _ in range(count)]

    def _new_uid(self) -> str:
        alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnpqrstuvwxyz23456789"
        return "ay" + str(self.rng.randint(10**12, 10**13 - 1)) + "".join(self.rng.choices(alphabet, k=5))

    def _new_device(self, product: Product, region: str, now_ms: int) -> Device:
        device_id = f"bf{self.rng.getrandbits(80):020x}"
        while device_id in self.devices:
            device_id = f"bf{self.rng.getrandbits(80):020x}"
        self._serial += 1
        alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
        device = Device(
            device_id=device_id,
            uuid=f"{self.rng.getrandbits(64):016x}",
            product_id=product.product_id,
            name=f"{product.name} {self._serial}",
            local_key="".join(self.rng.choices(alphabet, k=16)),
            region=region,
            binding_mode=self.spec.binding_mode or product.binding_mode,
            low_power=product.low_power,
            create_time=now_ms // 1000 - self.rng.randint(86_400, 365 * 86_400),
            ip=f"10.{self.rng.randrange(256)}.{self.rng.randrange(256)}.{self.rng.randrange(1, 255)}",
            firmware=dict(product.firmware),
            clock=now_ms - 1,
        )
        device.update_time = device.create_time
        for dp in product.dps:
            device.dps[dp.code] = DpState(dp.initial_value(self.rng), now_ms - 1)
        self.devices[device_id] = device
        return device

    # -- lookups --------------------------------------------------------------------------------------

    def _product(self, product_id: str) -> Product:
        try:
            return self.products[product_id]
        except KeyError:
            raise CloudRefusal(errors.PARAM_ILLEGAL, f"unknown product {product_id}") from None

    def product_of(self, device: Device) -> Product:
        return self.products[device.product_id]

    def world_device(self, device_id: str) -> Device:
        """Any device the simulator knows, bound or not (devices in the field)."""
        try:
            return self.devices[device_id]
        except KeyError:
            raise errors.device_not_exist(device_id) from None

    def device(self, device_id: str) -> Device:
        """A device the project can see through the OpenAPI: it must be bound to an owner."""
        device = self.world_device(device_id)
        if not device.bound:
            raise errors.device_not_exist(device_id)
        return device

    def owners(self) -> set[str]:
        return {h.owner_uid for h in self.homes.values()}

    # -- status reports and presence -----------------------------------------------------------------

    def report(self, device_id: str, now_ms: int, max_dps: int = 2) -> list[Event]:
        """One status report: 1..max_dps DPs change (weighted by volatility) at one device timestamp."""
        device = self.devices[device_id]
        if not device.online or not device.bound:
            return []
        product = self.product_of(device)
        candidates: list[DpSchema] = list(product.reporting_dps)
        if not candidates:
            return []
        chosen: list[DpSchema] = []
        for _ in range(self.rng.randint(1, min(max_dps, len(candidates)))):
            dp = self.rng.choices(candidates, weights=[c.volatility for c in candidates])[0]
            candidates.remove(dp)
            chosen.append(dp)
        chosen.sort(key=lambda dp: dp.dp_id)
        t = device.tick(now_ms)
        readings = []
        for dp in chosen:
            value = dp.next_value(device.dps[dp.code].value, self.rng)
            device.dps[dp.code] = DpState(value, t)
            readings.append(DpReading(dp.dp_id, dp.code, value, t))
            device.log(LogEntry(LogType.DP_REPORT, t, dp.code, _log_value(value)))
        if device.low_power:
            # A sleepy device wakes up to report; it stays reachable for a short window.
            device.awake_until = max(device.awake_until, now_ms + self.wake_window_ms)
        data_id = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        return [DpReported(device.device_id, device.product_id, t, data_id, tuple(readings))]

    def pick_reporters(self, count: int) -> list[str]:
        """`count` reporting devices chosen among the online, bound ones (a device may report repeatedly)."""
        online = [d.device_id for d in self.devices.values() if d.online and d.bound]
        if not online:
            return []
        return [self.rng.choice(online) for _ in range(count)]

    def set_online(self, device_id: str, online: bool, now_ms: int) -> list[Event]:
        device = self.world_device(device_id)
        if device.online == online:
            return []
        device.online = online
        if not device.bound:
            return []
        if online:
            if device.low_power:
                device.awake_until = now_ms + self.wake_window_ms
            device.log(LogEntry(LogType.ONLINE, now_ms))
            return [WentOnline(device.device_id, device.product_id, now_ms, device.uid)]
        device.log(LogEntry(LogType.OFFLINE, now_ms))
        return [WentOffline(device.device_id, device.product_id, now_ms, device.uid)]

    def churn(self, probability: float, now_ms: int) -> list[Event]:
        """Each bound device flips online/offline with `probability`."""
        events: list[Event] = []
        for device in list(self.devices.values()):
            if device.bound and self.rng.random() < probability:
                events += self.set_online(device.device_id, not device.online, now_ms)
        return events

    def wake(self, device_id: str, now_ms: int, window_ms: int | None = None) -> None:
        device = self.world_device(device_id)
        device.awake_until = now_ms + (self.wake_window_ms if window_ms is None else window_ms)

    def rename(self, device_id: str, name: str, now_ms: int) -> list[Event]:
        device = self.device(device_id)
        device.name = name
        device.update_time = now_ms // 1000
        return [DeviceRenamed(device.device_id, device.product_id, now_ms, device.uid, name, device.uuid)]

    def rename_dp(self, device_id: str, dp_id: int, name: str, now_ms: int) -> list[Event]:
        device = self.device(device_id)
        try:
            self.product_of(device).dp_by_id(dp_id)
        except KeyError:
            raise CloudRefusal(errors.PARAM_ILLEGAL, f"no DP {dp_id}") from None
        device.dp_names[dp_id] = name
        return [DpRenamed(device.device_id, device.product_id, now_ms, dp_id, name)]

    # -- pairing --------------------------------------------------------------------------------------

    def issue_token(
        self,
        *,
        uid: str,
        home_id: str | None,
        pairing_type: str,
        time_zone_id: str,
        token: str,
        secret: str,
        now_ms: int,
        lifetime_s: int,
        max_devices: int = 1,
        device_uuid: str | None = None,
    ) -> PairingToken:
        if uid not in self.owners():
            raise CloudRefusal(errors.PERMISSION_DENY, "permission deny: unknown user")
        if home_id:
            home = self.homes.get(home_id)
            if home is None or home.owner_uid != uid:
                raise CloudRefusal(errors.PERMISSION_DENY, "permission deny: home not owned by user")
        else:
            home = next(h for h in self.homes.values() if h.owner_uid == uid)  # the default home
        issued = PairingToken(
            token=token,
            secret=secret,
            region=PAIRING_REGION.get(home.region, "EU"),
            uid=uid,
            home_id=home.home_id,
            pairing_type=pairing_type,
            time_zone_id=time_zone_id,
            created_ms=now_ms,
            expire_ms=now_ms + lifetime_s * 1000,
            max_devices=max_devices,
            device_uuid=device_uuid,
        )
        self.tokens[token] = issued
        return issued

    def pairing_result(self, token: str) -> PairingToken:
        try:
            return self.tokens[token]
        except KeyError:
            raise CloudRefusal(errors.DATA_NOT_EXIST, "data not exist") from None

    def token_of(self, assembled_token: str) -> PairingToken:
        """The token a device was handed (`region + token + secret`); refused when it is none of ours."""
        parts = split_assembled(assembled_token)
        token = self.tokens.get(parts[1]) if parts else None
        if parts is None or token is None or token.secret != parts[2] or token.region != parts[0]:
            # The device cannot even reach the right registration: nothing shows up in any token result.
            raise CloudRefusal(errors.PARAM_ILLEGAL, "pairing token invalid")
        return token

    def fail_pairing(
        self,
        device_id: str,
        assembled_token: str,
        code: str,
        msg: str,
        *,
        decision: RebindDecision | None = None,
    ) -> ActivationOutcome:
        """The device failed to pair with this token; Tuya lists it in the token result's `failed`."""
        token = self.token_of(assembled_token)
        device = self.world_device(device_id)
        token.record_failure(device.device_id, device.name, code, msg)
        return ActivationOutcome(device.device_id, False, code, msg, decision)

    def activate(self, device_id: str, assembled_token: str, now_ms: int) -> ActivationOutcome:
        """A device in pairing mode activates with the token it was given (`region + token + secret`)."""
        token = self.token_of(assembled_token)
        device = self.world_device(device_id)
        decision = rebind_decision(device.binding_mode, device.uid, token.uid)
        failure: tuple[str, str] | None = None
        if token.expired(now_ms):
            failure = FAIL_TOKEN_EXPIRED
        elif token.spent:
            failure = FAIL_TOKEN_SPENT
        elif token.device_uuid is not None and token.device_uuid != device.uuid:
            failure = BLE_DEVICE_NOT_FOUND
        elif decision is RebindDecision.REFUSED:
            failure = FAIL_STRONG_BOUND
        if failure is not None:
            return self.fail_pairing(device_id, assembled_token, *failure, decision=decision)

        events: list[Event] = []
        if decision in (RebindDecision.REBIND, RebindDecision.REBIND_NOTIFY):
            assert device.uid is not None
            assert device.home_id is not None
            if decision is RebindDecision.REBIND_NOTIFY:
                self.notifications.append(
                    {
                        "device_id": device.device_id,
                        "previous_uid": device.uid,
                        "previous_home_id": device.home_id,
                        "new_uid": token.uid,
                        "t": now_ms,
                    }
                )
            events.append(
                DeviceUnbound(device.device_id, device.product_id, now_ms, device.uid, device.home_id, False)
            )
        was_online = device.online and device.bound
        device.uid, device.home_id = token.uid, token.home_id
        device.region = DATA_CENTRE.get(token.region, device.region)
        device.time_zone = self.homes[token.home_id].time_zone
        device.active_time = device.update_time = now_ms // 1000
        device.online = True
        if device.low_power:
            device.awake_until = now_ms + self.wake_window_ms
        device.log(LogEntry(LogType.ACTIVATION, now_ms, event_from="2"))
        events.append(
            DeviceBound(
                device.device_id,
                device.product_id,
                now_ms,
                token.uid,
                token.home_id,
                device.uuid,
                token.token,
            )
        )
        if not was_online:
            device.log(LogEntry(LogType.ONLINE, now_ms))
            events.append(WentOnline(device.device_id, device.product_id, now_ms, device.uid))
        product = self.product_of(device)
        token.success.append(
            {
                "device_id": device.device_id,
                "product_id": device.product_id,
                "category": product.category,
                "name": device.name,
            }
        )
        return ActivationOutcome(device.device_id, True, decision=decision, events=tuple(events))

    # -- removal --------------------------------------------------------------------------------------

    def unbind(self, device_id: str, now_ms: int, *, reset: bool) -> list[Event]:
        """Removes the device from its owner (`reset`: factory reset too: DP values back to defaults)."""
        device = self.device(device_id)
        assert device.uid is not None
        assert device.home_id is not None
        events: list[Event] = []
        if device.online:
            device.log(LogEntry(LogType.OFFLINE, now_ms))
            events.append(WentOffline(device.device_id, device.product_id, now_ms, device.uid))
        events.append(
            DeviceUnbound(device.device_id, device.product_id, now_ms, device.uid, device.home_id, reset)
        )
        if reset:
            t = device.tick(now_ms)
            for dp in self.product_of(device).dps:
                device.dps[dp.code] = DpState(dp.default_value(), t)
            device.dp_names.clear()
            device.log(LogEntry(LogType.RESET, now_ms, event_from="2"))
        device.uid = device.home_id = None
        device.online = False
        for key, job in list(self.ota_jobs.items()):
            if key[0] == device_id and not job.final:
                del self.ota_jobs[key]
        return events

    # -- OTA ------------------------------------------------------------------------------------------

    def release_firmware(self, release: FirmwareRelease) -> None:
        self._product(release.product_id)
        self.releases[(release.product_id, release.channel)] = release

    def plan_upgrade(self, device_id: str, channel: int, outcome: OtaOutcome) -> None:
        """Fixes the outcome of the next upgrade of this device's channel (tests, demos)."""
        self.world_device(device_id)
        self.ota_plans[(device_id, channel)] = outcome

    def firmware(self, device_id: str) -> list[ChannelFirmware]:
        device = self.device(device_id)
        channels = sorted(
            set(device.firmware) | {ch for (pid, ch) in self.releases if pid == device.product_id}
        )
        return [
            ChannelFirmware(
                channel=ch,
                current_version=device.firmware.get(ch, "0.0.0"),
                release=self.releases.get((device.product_id, ch)),
                job=self.ota_jobs.get((device_id, ch)),
            )
            for ch in channels
        ]

    def start_upgrade(self, device_id: str, channel: int, now_ms: int) -> list[Event]:
        """An upgrade command: counted, accepted or refused (rate limit, offline, nothing to upgrade)."""
        self.ota_faults.admit(device_id, now_ms)
        try:
            events = self._start_upgrade(device_id, channel, now_ms)
        except CloudRefusal as refusal:
            self.ota_faults.refused(device_id, refusal.code)
            raise
        self.ota_faults.accepted(device_id)
        return events

    def _start_upgrade(self, device_id: str, channel: int, now_ms: int) -> list[Event]:
        device = self.device(device_id)
        if channel not in device.firmware:
            raise CloudRefusal(errors.NOT_SUPPORTED, f"channel {channel} not supported by this device")
        release = self.releases.get((device.product_id, channel))
        current = device.firmware[channel]
        if release is None or version_key(release.version) <= version_key(current):
            raise CloudRefusal(errors.NOT_SUPPORTED, "no firmware update available")
        busy = [key for key, job in self.ota_jobs.items() if key[0] == device_id and not job.final]
        if busy:
            raise CloudRefusal(errors.PARAM_ILLEGAL, "an upgrade is already in progress on this device")
        if not device.online and not device.low_power:
            raise CloudRefusal(errors.DEVICE_OFFLINE, "device is offline")
        outcome = self.ota_plans.pop((device_id, channel), None) or self._draw_outcome(device)
        job = OtaJob(
            device_id=device_id,
            channel=channel,
            from_version=current,
            to_version=release.version,
            outcome=outcome,
            stop_at=self.rng.randint(1, 9) * 10,
            timeout_ms=release.timeout_s * 1000,
            last_step_ms=now_ms,
        )
        self.ota_jobs[(device_id, channel)] = job
        job.advance(now_ms, device.awake(now_ms), self.ota.step_ms, self.ota.step_pct)
        if job.waiting:  # Tuya's 5: the command waits for the (sleepy or offline) device
            wait = OtaUpgradeStatus.WAITING_FOR_WAKE_UP
            return [self._ota_event(device, job, now_ms, "waiting for the device to wake up", wait, 0)]
        return [self._ota_event(device, job, now_ms, "upgrading", job.status, job.progress)]

    def _draw_outcome(self, device: Device) -> OtaOutcome:
        rates = self.ota_faults.rates_for(device.region, device.product_id)
        if rates is not None:
            return rates.draw(self.rng)
        draw = self.rng.random()
        if draw < self.ota.failure_ratio:
            return OtaOutcome.FAILURE
        if draw < self.ota.failure_ratio + self.ota.timeout_ratio:
            return OtaOutcome.TIMEOUT
        return OtaOutcome.SUCCESS

    def advance(self, now_ms: int) -> list[Event]:
        """Moves every running upgrade on to `now_ms`."""
        events: list[Event] = []
        for job in list(self.ota_jobs.values()):
            if job.final:
                continue
            device = self.devices[job.device_id]
            steps = job.advance(now_ms, device.awake(now_ms), self.ota.step_ms, self.ota.step_pct)
            for step in steps:
                if step.status is OtaUpgradeStatus.DONE and job.outcome is not OtaOutcome.DONE_OLD_VERSION:
                    device.firmware[job.channel] = job.to_version
                    device.log(LogEntry(LogType.FIRMWARE, step.at_ms, str(job.channel), job.to_version))
                # Each step at its own time: two steps caught up in one call must not be the same message
                # (the legacy `upgradeStatus` carries no progress, only status, description and `ts`).
                events.append(
                    self._ota_event(
                        device, job, step.at_ms, _OTA_DESC[step.status], step.status, step.progress
                    )
                )
        return events

    @staticmethod
    def _ota_event(
        device: Device, job: OtaJob, now_ms: int, description: str, status: OtaUpgradeStatus, progress: int
    ) -> OtaProgressed:
        return OtaProgressed(
            device.device_id,
            device.product_id,
            now_ms,
            channel=job.channel,
            upgrade_status=int(status),
            progress=progress,
            version=job.to_version,
            description=description,
        )


_OTA_DESC = {
    OtaUpgradeStatus.UPGRADING: "upgrading",
    OtaUpgradeStatus.DONE: "upgrade succeeded",
    OtaUpgradeStatus.FAILED: "upgrade failed",
    OtaUpgradeStatus.TIMED_OUT: "upgrade timed out",
}


def _log_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
