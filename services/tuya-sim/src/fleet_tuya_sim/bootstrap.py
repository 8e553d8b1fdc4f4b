"""Wiring: settings -> sink (Pulsar or memory) -> simulator -> gate -> HTTP app. The one place that knows
which adapters run. Operational endpoints and JSON logs come from the shared service kit
(fleet_shared.service); the simulator's own settings keep their `FLEET_SIM_` prefix."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from fastapi import FastAPI

from fleet_contracts import topics
from fleet_shared.provisioning import provision
from fleet_tuya_sim.adapters.sinks import MemorySink, PulsarSink, PushSink
from fleet_tuya_sim.config import SimSettings
from fleet_tuya_sim.domain.fleet import FleetSpec, OtaSettings
from fleet_tuya_sim.domain.project import ProjectAccess
from fleet_tuya_sim.entrypoints.app import create_app
from fleet_tuya_sim.service_layer.gate import OpenApiGate
from fleet_tuya_sim.service_layer.pipeline import ChaosSettings
from fleet_tuya_sim.service_layer.simulator import Clock, Simulator, SimulatorOptions

_log = logging.getLogger(__name__)


@dataclass
class Wiring:
    settings: SimSettings
    simulator: Simulator
    gate: OpenApiGate
    app: FastAPI


def topic_for(settings: SimSettings) -> str:
    return settings.topic or topics.tuya_event_topic(settings.access_id)


def make_sink(settings: SimSettings) -> PushSink:
    if not settings.pulsar_url:
        _log.warning("FLEET_PULSAR_URL not set: push messages are kept in memory only")
        return MemorySink()
    return PulsarSink(
        settings.pulsar_url,
        topic_for(settings),
        batching=settings.batching,
        batching_max_delay_ms=settings.batching_max_delay_ms,
        max_pending=max(1000, settings.max_in_flight * 2),
    )


def developer_uid(access_id: str) -> str:
    return "bay" + access_id[:13].ljust(13, "0")


def bootstrap(
    settings: SimSettings | None = None,
    *,
    sink: PushSink | None = None,
    clock: Clock = time.time,
    create_fleet: bool = True,
    manage_simulator: bool = True,
) -> Wiring:
    settings = settings or SimSettings()
    secret = settings.access_secret.get_secret_value()
    project_secrets = {settings.access_id: secret}
    project_secrets.update({k: v.get_secret_value() for k, v in settings.extra_projects.items()})
    access = ProjectAccess(
        token_lifetime_s=settings.token_lifetime_s,
        max_clock_skew_ms=settings.max_clock_skew_s * 1000,
        rate_per_second=settings.rate_limit_rps,
        burst=settings.rate_limit_burst,
        developer_uids={a: developer_uid(a) for a in project_secrets},
    )
    options = SimulatorOptions(
        access_id=settings.access_id,
        access_secret=secret,
        family=settings.message_family,
        encryption=settings.encryption,
        max_in_flight=settings.max_in_flight,
        chaos=ChaosSettings(settings.chaos_duplicate_ratio, settings.chaos_shuffle_window),
        ota=OtaSettings(
            step_ms=settings.ota_step_ms,
            step_pct=settings.ota_step_pct,
            failure_ratio=settings.ota_failure_ratio,
            timeout_ratio=settings.ota_timeout_ratio,
        ),
        wake_window_ms=int(settings.wake_window_s * 1000),
        pairing_token_lifetime_s=settings.pairing_token_lifetime_s,
        pairing_ez_max_devices=settings.pairing_ez_max_devices,
        truth_max_messages=settings.truth_max_messages,
    )
    simulator = Simulator(options, sink if sink is not None else make_sink(settings), access, clock)
    gate = OpenApiGate(access, project_secrets, simulator.now_ms)
    control_token = settings.control_token.get_secret_value() if settings.control_token else None

    def on_startup() -> None:
        if create_fleet and not simulator.has_fleet:
            simulator.install_fleet(_default_spec(settings))

    if settings.provision and settings.pulsar_admin_url:
        provision(settings.pulsar_admin_url, settings.access_id)
    app = create_app(
        simulator, gate, control_token=control_token, on_startup=on_startup, manage_simulator=manage_simulator
    )
    return Wiring(settings, simulator, gate, app)


def _default_spec(settings: SimSettings) -> FleetSpec:
    return FleetSpec(
        seed=settings.seed,
        devices=settings.devices,
        homes=settings.homes,
        regions=settings.regions,
        unbound=settings.unbound,
    )
