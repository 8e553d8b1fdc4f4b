"""Wiring: settings -> sink (the shared Pulsar broker, or memory) -> simulator -> OpenAPI gate. The one place
that knows which adapters run; `entrypoints.app.create_app(bootstrap())` serves it over HTTP. The simulator's
own settings keep their `FLEET_SIM_` prefix."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

from fleet_contracts import topics
from fleet_shared.pulsar import ProducerOptions, PulsarBroker
from fleet_shared.service import ReadinessCheck
from fleet_shared.service.clients import close_all, provision_topics, pulsar_broker
from fleet_tuya_sim.adapters.sinks import MemorySink, PulsarSink
from fleet_tuya_sim.domain.app_users import LinkedApp
from fleet_tuya_sim.domain.fleet import FleetSpec, OtaSettings
from fleet_tuya_sim.domain.project import ProjectAccess
from fleet_tuya_sim.ports import PushSink
from fleet_tuya_sim.service_layer.gate import OpenApiGate
from fleet_tuya_sim.service_layer.pipeline import ChaosSettings
from fleet_tuya_sim.service_layer.simulator import Clock, Simulator, SimulatorOptions
from fleet_tuya_sim.settings import SimSettings

SERVICE = "tuya-sim"
_log = logging.getLogger(__name__)


@dataclass
class TuyaSim:
    """The running parts of one simulator process."""

    settings: SimSettings
    simulator: Simulator
    gate: OpenApiGate
    broker: PulsarBroker | None  # None: push messages stay in memory
    linked_app: LinkedApp
    create_fleet: bool = True

    async def start(self) -> None:
        """Topic layout (if asked; with the bus's token and CA), broker connected, publisher running, then the
        startup fleet."""
        settings = self.settings
        if settings.provision and settings.pulsar_admin_url:
            await asyncio.to_thread(provision_topics, settings, settings.access_id)
        if self.broker is not None:
            await self.broker.connect()
        await self.simulator.start()
        if self.create_fleet and not self.simulator.has_fleet:
            self.simulator.install_fleet(_default_spec(settings))

    async def stop(self) -> None:
        """Stop the scenario, wait for published messages to be confirmed, flush and close the producer."""
        await close_all(self.simulator.stop, self.broker.stop if self.broker else None)

    async def fleet_ready(self) -> bool:
        return self.simulator.has_fleet

    async def publisher_ready(self) -> bool:
        return self.simulator.running

    async def bus_ready(self) -> bool:
        return self.broker is not None and await self.broker.ping(2.0)

    def readiness_checks(self) -> Mapping[str, ReadinessCheck]:
        checks: dict[str, ReadinessCheck] = {"fleet": self.fleet_ready, "publisher": self.publisher_ready}
        if self.broker is not None:
            checks["bus"] = self.bus_ready
        return checks


def topic_for(settings: SimSettings) -> str:
    return settings.topic or topics.tuya_event_topic(settings.access_id)


def make_broker(settings: SimSettings) -> PulsarBroker | None:
    if not settings.pulsar_url:
        return None
    options = ProducerOptions(
        batching=settings.batching,
        batching_max_publish_delay_ms=settings.batching_max_delay_ms,
        # above the pipeline's in-flight bound, so its sends never wait on the producer's own bound
        max_pending_messages=max(1000, settings.max_in_flight * 2),
    )
    # every message's publish line only when debugging: thousands a second otherwise
    return pulsar_broker(settings, producer_options=options, log_level=logging.DEBUG)


def developer_uid(access_id: str) -> str:
    return "bay" + access_id[:13].ljust(13, "0")


def bootstrap(
    settings: SimSettings | None = None,
    *,
    sink: PushSink | None = None,
    clock: Clock = time.time,
    create_fleet: bool = True,
) -> TuyaSim:
    """`sink`: publish there instead (tests); otherwise Pulsar when FLEET_PULSAR_URL is set, else memory."""
    settings = settings or SimSettings()
    broker = make_broker(settings) if sink is None else None
    if sink is None:
        if broker is None:
            _log.warning("FLEET_PULSAR_URL not set: push messages are kept in memory only")
        sink = MemorySink() if broker is None else PulsarSink(broker, topic_for(settings))
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
    simulator = Simulator(_simulator_options(settings, secret), sink, access, clock)
    gate = OpenApiGate(access, project_secrets, simulator.now_ms)
    linked_app = LinkedApp(settings.app_schema, settings.app_password.get_secret_value())
    return TuyaSim(settings, simulator, gate, broker, linked_app, create_fleet)


def _simulator_options(settings: SimSettings, secret: str) -> SimulatorOptions:
    return SimulatorOptions(
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


def _default_spec(settings: SimSettings) -> FleetSpec:
    return FleetSpec(
        seed=settings.seed,
        devices=settings.devices,
        homes=settings.homes,
        regions=settings.regions,
        unbound=settings.unbound,
    )
