"""The simulated cloud's handlers: they run the fleet's rules, turn what happened into encrypted Tuya push
messages and keep the ground truth. Entry points (OpenAPI, control API, CLI) call these and nothing else.

All fleet changes happen on the event loop thread in plain synchronous calls, so the order in which
messages enter the pipeline is the order things happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import random
import secrets
import string
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from fleet_shared.tuya.codec import EncryptionMode, PushCodec
from fleet_tuya_sim.domain.events import Event
from fleet_tuya_sim.domain.fleet import ActivationOutcome, Fleet, FleetSpec, OtaSettings
from fleet_tuya_sim.domain.ota import FirmwareRelease, OtaOutcome
from fleet_tuya_sim.domain.pairing import SECRET_LEN, TOKEN_LEN, PairingToken
from fleet_tuya_sim.domain.project import ProjectAccess
from fleet_tuya_sim.domain.push_messages import MessageFamily, payloads
from fleet_tuya_sim.domain.unbinding import RemovalDesk
from fleet_tuya_sim.ports import PushSink
from fleet_tuya_sim.service_layer import malformed
from fleet_tuya_sim.service_layer.pipeline import ChaosSettings, Outgoing, PublishPipeline
from fleet_tuya_sim.service_layer.truth import GroundTruth, MessageRecord, fleet_truth

_log = logging.getLogger(__name__)

Clock = Callable[[], float]


@dataclass
class SimulatorOptions:
    access_id: str
    access_secret: str = field(repr=False)
    family: MessageFamily = MessageFamily.LEGACY
    encryption: EncryptionMode = EncryptionMode.GCM
    max_in_flight: int = 500
    chaos: ChaosSettings = field(default_factory=ChaosSettings)
    ota: OtaSettings = field(default_factory=OtaSettings)
    wake_window_ms: int = 30_000
    pairing_token_lifetime_s: int = 600
    pairing_ez_max_devices: int = 1
    truth_max_messages: int = 1_000_000
    background_tick_s: float = 0.2


# fleets from this many devices are frozen out of full garbage collections (see `install_fleet`)
FREEZE_FLEETS_FROM = 2_000


@dataclass
class ScenarioSpec:
    rate: float = 10.0  # status reports per second, whole fleet
    duration_s: float = 10.0
    churn_rate: float = 0.0  # chance per device per second of flipping online/offline
    max_dps: int = 2  # DPs per report (1..max_dps)
    malformed: int = 0  # malformed messages spread over the run (kinds in rotation)
    tick_s: float = 0.1


@dataclass
class ScenarioState:
    spec: ScenarioSpec
    running: bool = True
    ticks: int = 0
    reports: int = 0
    presence_changes: int = 0
    malformed: int = 0
    started_ms: int = 0
    finished_ms: int | None = None
    stopped: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec.__dict__,
            "running": self.running,
            "ticks": self.ticks,
            "reports": self.reports,
            "presence_changes": self.presence_changes,
            "malformed": self.malformed,
            "started_ms": self.started_ms,
            "finished_ms": self.finished_ms,
            "stopped": self.stopped,
        }


_TOKEN_ALPHABET = string.ascii_letters + string.digits


class Simulator:
    def __init__(
        self, options: SimulatorOptions, sink: PushSink, access: ProjectAccess, clock: Clock = time.time
    ) -> None:
        self.options = options
        self.sink = sink
        self.access = access
        self.clock = clock
        self.codec = PushCodec(options.access_secret)
        self.truth = GroundTruth(options.truth_max_messages)
        self.pipeline = PublishPipeline(
            sink, self.truth, max_in_flight=options.max_in_flight, chaos=options.chaos
        )
        self._fleet: Fleet | None = None
        self.scenario: ScenarioState | None = None
        self._scenario_task: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._malformed_rotation = 0
        self._replay_rng = random.Random("replay")
        self.removal_desk = RemovalDesk()  # removal faults, per-API rate and counts (domain/unbinding.py)

    # -- lifecycle ------------------------------------------------------------------------------------

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    @property
    def running(self) -> bool:
        """The publisher drains its queue (started and not crashed)."""
        return bool(self._tasks) and not any(task.done() for task in self._tasks)

    async def start(self) -> None:
        """Starts the publisher and the background ticks; the sink must be ready to send."""
        self._tasks = [
            asyncio.create_task(self.pipeline.run(), name="tuya-sim-publisher"),
            asyncio.create_task(self._background(), name="tuya-sim-background"),
        ]

    async def stop(self, flush_timeout: float = 30.0) -> None:
        """Stops the scenario, waits for what was published to be confirmed (or `flush_timeout`), then
        stops the publisher; the sink is closed after this by its owner."""
        await self.stop_scenario()
        await self.pipeline.flush(flush_timeout)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def _background(self) -> None:
        """Moves upgrades on and releases a partly filled shuffle window, a few times a second."""
        while True:
            await asyncio.sleep(self.options.background_tick_s)
            if self._fleet is not None:
                self.emit(self._fleet.advance(self.now_ms()))
            self.pipeline.flush_window()

    # -- fleet ----------------------------------------------------------------------------------------

    @property
    def fleet(self) -> Fleet:
        if self._fleet is None:
            raise LookupError("no fleet: create one first (POST /sim/fleet)")
        return self._fleet

    @property
    def has_fleet(self) -> bool:
        return self._fleet is not None

    async def create_fleet(self, spec: FleetSpec) -> Fleet:
        """A new fleet replaces the old one (and its ground truth)."""
        await self.stop_scenario()
        await self.pipeline.flush()
        return self.install_fleet(spec)

    def install_fleet(self, spec: FleetSpec) -> Fleet:
        """Creates the fleet now (startup; `create_fleet` waits for the previous fleet's messages first).

        A large fleet lives until the next one: it is frozen out of the garbage collector's full
        collections (10,000 devices made each one stall the simulator 0.1-1.2 s, and every call queued
        meanwhile then arrived at once: rate limits refused them); the previous fleet is unfrozen first
        so it can be collected. Small fleets (tests) are left alone: the collection before freezing would
        cost more than it saves; unless the process had frozen its long-lived objects at start (the service
        kit's `freeze_long_lived`), which the unfreeze gave back to the collector."""
        was_frozen = gc.get_freeze_count() > 0
        gc.unfreeze()
        fleet = Fleet.create(spec, self.now_ms())
        fleet.ota = self.options.ota
        fleet.wake_window_ms = self.options.wake_window_ms
        self._fleet = fleet
        self.truth = GroundTruth(self.options.truth_max_messages)
        self.pipeline.truth = self.truth
        self.pipeline.reseed(spec.seed)
        self._replay_rng = random.Random(f"{spec.seed}:replay")
        self._malformed_rotation = 0
        if was_frozen or len(fleet.devices) >= FREEZE_FLEETS_FROM:
            gc.collect()
            gc.freeze()
        _log.info(
            "fleet created: seed=%s devices=%s homes=%s", spec.seed, len(fleet.devices), len(fleet.homes)
        )
        return fleet

    # -- publishing -----------------------------------------------------------------------------------

    def emit(self, events: Iterable[Event]) -> list[str]:
        """Encrypts each event as the configured message family(ies) and queues it; returns the tids."""
        tids: list[str] = []
        mode = self.options.encryption
        for event in events:
            for p in payloads(event, self.options.family):
                encoded = self.codec.encode(p.data, protocol=p.protocol, mode=mode, t=p.t)
                tid = uuid.uuid4().hex
                record = MessageRecord(
                    seq=0,
                    tid=tid,
                    key=p.device_id,
                    protocol=p.protocol,
                    kind=p.kind,
                    mode=mode.value,
                    t=p.t,
                    data=p.data,
                )
                self.pipeline.put(Outgoing(record, encoded.payload(), {**encoded.properties, "tid": tid}))
                tids.append(tid)
        return tids

    def inject_malformed(self, count: int, kinds: Sequence[malformed.Malformation] = ()) -> list[str]:
        """`count` malformed messages (kinds in rotation unless given), keyed by real device ids."""
        rotation = list(kinds) or list(malformed.Malformation)
        device_ids = list(self.fleet.devices)
        tids: list[str] = []
        for _ in range(count):
            kind = rotation[self._malformed_rotation % len(rotation)]
            key = device_ids[self._malformed_rotation % len(device_ids)]
            self._malformed_rotation += 1
            bad = malformed.build(kind, self.options.access_secret, key, self.now_ms())
            tid = uuid.uuid4().hex
            record = MessageRecord(
                seq=0,
                tid=tid,
                key=key,
                protocol=bad.protocol,
                kind=kind.value,
                mode=bad.properties.get("em", ""),
                t=bad.envelope["t"],
                expected=bad.expected,
                malformed=kind.value,
            )
            self.pipeline.put(Outgoing(record, bad.payload(), {**bad.properties, "tid": tid}))
            tids.append(tid)
        return tids

    def replay(self, count: int, up_to_seq: int | None = None) -> list[str]:
        """Tuya's late re-push: `count` messages published earlier (up to stream position `up_to_seq`), sent
        again with the same data and `tid`, re-encrypted (new ciphertext), as new Pulsar messages. Unlike a
        chaos twin, which follows its original within the shuffle window, these come after any gap, e.g.
        after a consumer restarted. Returns the tids replayed, in publication order."""
        candidates = [
            m
            for m in self.truth.messages
            if m.data is not None
            and m.duplicate_of is None
            and m.error is None
            and (up_to_seq is None or m.seq <= up_to_seq)
        ]
        chosen = sorted(self._replay_rng.sample(candidates, min(count, len(candidates))), key=lambda m: m.seq)
        for original in chosen:
            assert original.data is not None
            encoded = self.codec.encode(
                original.data, protocol=original.protocol, mode=EncryptionMode(original.mode), t=original.t
            )
            record = replace(
                original, seq=0, duplicate_of=original.tid, replayed=True, message_id=None, error=None
            )
            self.pipeline.put(
                Outgoing(record, encoded.payload(), {**encoded.properties, "tid": original.tid})
            )
        return [m.tid for m in chosen]

    async def flush(self, within_s: float = 30.0) -> bool:
        return await self.pipeline.flush(within_s)

    # -- device operations ----------------------------------------------------------------------------

    def report(self, device_ids: Sequence[str] = (), count: int = 0, max_dps: int = 2) -> list[str]:
        fleet = self.fleet
        now = self.now_ms()
        chosen = list(device_ids) or fleet.pick_reporters(count)
        events: list[Event] = []
        for device_id in chosen:
            fleet.world_device(device_id)
            events += fleet.report(device_id, now, max_dps)
        return self.emit(events)

    def set_online(self, device_id: str, online: bool) -> list[str]:
        return self.emit(self.fleet.set_online(device_id, online, self.now_ms()))

    def wake(self, device_id: str, window_s: float | None = None) -> None:
        self.fleet.wake(device_id, self.now_ms(), None if window_s is None else int(window_s * 1000))
        self.emit(self.fleet.advance(self.now_ms()))

    def rename(self, device_id: str, name: str) -> list[str]:
        return self.emit(self.fleet.rename(device_id, name, self.now_ms()))

    def rename_dp(self, device_id: str, dp_id: int, name: str) -> list[str]:
        return self.emit(self.fleet.rename_dp(device_id, dp_id, name, self.now_ms()))

    def issue_pairing_token(
        self,
        *,
        uid: str,
        home_id: str | None,
        pairing_type: str,
        time_zone_id: str,
        device_uuid: str | None = None,
    ) -> PairingToken:
        token = "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(TOKEN_LEN))
        secret = "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(SECRET_LEN))
        max_devices = self.options.pairing_ez_max_devices if pairing_type == "EZ" else 1
        return self.fleet.issue_token(
            uid=uid,
            home_id=home_id,
            pairing_type=pairing_type,
            time_zone_id=time_zone_id,
            token=token,
            secret=secret,
            now_ms=self.now_ms(),
            lifetime_s=self.options.pairing_token_lifetime_s,
            max_devices=max_devices,
            device_uuid=device_uuid if pairing_type == "BLE" else None,
        )

    def activate(self, device_ids: Sequence[str], assembled_token: str) -> list[ActivationOutcome]:
        outcomes = []
        for device_id in device_ids:
            outcome = self.fleet.activate(device_id, assembled_token, self.now_ms())
            self.emit(outcome.events)
            outcomes.append(outcome)
        return outcomes

    def unbind(self, device_id: str, *, reset: bool) -> list[str]:
        self.fleet.device(device_id)  # 2010 before any fault: an unknown device is not rate limited
        self.removal_desk.admit(device_id, self.now_ms())
        tids = self.emit(self.fleet.unbind(device_id, self.now_ms(), reset=reset))
        self.removal_desk.removed(device_id, self.now_ms())
        return tids

    def release_firmware(self, release: FirmwareRelease) -> None:
        self.fleet.release_firmware(release)

    def plan_upgrade(self, device_id: str, channel: int, outcome: OtaOutcome) -> None:
        self.fleet.plan_upgrade(device_id, channel, outcome)

    def start_upgrade(self, device_id: str, channel: int) -> list[str]:
        return self.emit(self.fleet.start_upgrade(device_id, channel, self.now_ms()))

    def advance(self) -> list[str]:
        return self.emit(self.fleet.advance(self.now_ms()))

    # -- scenarios ------------------------------------------------------------------------------------

    def start_scenario(self, spec: ScenarioSpec) -> ScenarioState:
        self.fleet  # noqa: B018 - a scenario needs a fleet: fail now, not in the task
        if self._scenario_task is not None and not self._scenario_task.done():
            raise RuntimeError("a scenario is already running")
        state = ScenarioState(spec=spec, started_ms=self.now_ms())
        self.scenario = state
        self._scenario_task = asyncio.create_task(self._run_scenario(state), name="tuya-sim-scenario")
        return state

    async def stop_scenario(self) -> None:
        task = self._scenario_task
        if task is not None and not task.done():
            if self.scenario is not None:
                self.scenario.stopped = True
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._scenario_task = None

    async def wait_scenario(self, within_s: float | None = None) -> ScenarioState | None:
        task = self._scenario_task
        if task is not None:
            await asyncio.wait_for(asyncio.shield(task), within_s)
        return self.scenario

    async def _run_scenario(self, state: ScenarioState) -> None:
        spec = state.spec
        fleet = self.fleet
        ticks = max(1, round(spec.duration_s / spec.tick_s))
        total_reports = round(spec.rate * spec.duration_s)
        # Malformed messages go out at evenly spaced ticks; the report count per tick is fixed by the spec,
        # so the same seed gives the same messages however fast the host is.
        malformed_at = {round((i + 1) * ticks / (spec.malformed + 1)) for i in range(spec.malformed)}
        started = time.monotonic()
        try:
            for tick in range(ticks):
                now = self.now_ms()
                due = total_reports * (tick + 1) // ticks - total_reports * tick // ticks
                events: list[Event] = []
                for device_id in fleet.pick_reporters(due):
                    events += fleet.report(device_id, now, spec.max_dps)
                state.reports += len(events)
                if spec.churn_rate > 0:
                    changes = fleet.churn(spec.churn_rate * spec.tick_s, now)
                    state.presence_changes += len(changes)
                    events += changes
                events += fleet.advance(now)
                self.emit(events)
                if tick in malformed_at and state.malformed < spec.malformed:
                    state.malformed += len(self.inject_malformed(1))
                state.ticks = tick + 1
                await self.pipeline.wait_below(self.options.max_in_flight * 4)
                delay = started + (tick + 1) * spec.tick_s - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            if state.malformed < spec.malformed:
                state.malformed += len(self.inject_malformed(spec.malformed - state.malformed))
            self.pipeline.flush_window()
        finally:
            state.running = False
            state.finished_ms = self.now_ms()

    # -- ground truth ---------------------------------------------------------------------------------

    def truth_snapshot(self, *, messages: bool = True) -> dict[str, Any]:
        snapshot: dict[str, Any] = {
            "access_id": self.options.access_id,
            "family": self.options.family.value,
            "encryption": self.options.encryption.value,
            "chaos": self.options.chaos.__dict__,
            "summary": self.truth.summary(),
            "fleet": fleet_truth(self._fleet) if self._fleet is not None else None,
            "scenario": self.scenario.as_dict() if self.scenario is not None else None,
        }
        if messages:
            snapshot["messages"] = [m.as_dict() for m in self.truth.messages]
        return snapshot
