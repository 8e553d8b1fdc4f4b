"""What pairing, unbinding, ota and status hold the same way (`DomainClients`): built from the settings
without connecting, opened keys first then the bus, probed as `bus` and `database`, closed in one order
after the service's own steps, every step even when one fails."""

from __future__ import annotations

from typing import Any, cast

import pytest
from pydantic import SecretStr

from fleet_ota.bootstrap import bootstrap as bootstrap_ota
from fleet_ota.settings import OtaSettings
from fleet_pairing.bootstrap import bootstrap as bootstrap_pairing
from fleet_pairing.settings import PairingSettings
from fleet_shared.service.domain import DomainClients, domain_clients
from fleet_unbinding.bootstrap import bootstrap as bootstrap_unbinding
from fleet_unbinding.settings import UnbindingSettings

pytestmark = pytest.mark.unit

NOWHERE = "mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=300"


class Steps:
    """Every client of the holder, recording what is asked of it in one list."""

    def __init__(self, *, failing: str = "") -> None:
        self.calls: list[str] = []
        self.failing = failing

    def step(self, name: str) -> Any:
        async def run(*_: object) -> bool:
            self.calls.append(name)
            if name == self.failing:
                raise ConnectionError(f"{name} failed")
            return True

        return run

    def sync_step(self, name: str) -> Any:
        def run() -> None:
            self.calls.append(name)

        return run


class _Fake:
    def __init__(self, **methods: Any) -> None:
        self.__dict__.update(methods)


def held(steps: Steps, *, openapi: bool = True) -> DomainClients:
    broker = _Fake(
        connect=steps.step("broker.connect"), stop=steps.step("broker.stop"), ping=steps.step("ping")
    )
    security = _Fake(prepare=steps.step("security.prepare"), aclose=steps.step("security.aclose"))
    return DomainClients(
        broker=cast(Any, broker),
        mongo_client=cast(Any, _Fake(close=steps.sync_step("mongo.close"))),
        db=cast(Any, _Fake(command=steps.step("db.ping"))),
        security=cast(Any, security),
        openapi=cast(Any, _Fake(aclose=steps.step("openapi.aclose"))) if openapi else None,
    )


async def test_open_seeds_the_keys_then_connects_the_bus() -> None:
    steps = Steps()
    await held(steps).open(SecretStr("devstack:fk_0123"))
    assert steps.calls == ["security.prepare", "broker.connect"]


async def test_close_runs_the_services_steps_first_then_the_clients_in_one_order() -> None:
    steps = Steps()
    await held(steps).close(steps.step("loops.stop"), steps.step("relay.abandon"))
    assert steps.calls == [
        "loops.stop",
        "relay.abandon",
        "broker.stop",
        "openapi.aclose",
        "security.aclose",
        "mongo.close",
    ]


async def test_a_failing_step_leaves_no_client_open_and_is_raised() -> None:
    steps = Steps(failing="broker.stop")
    with pytest.raises(ConnectionError, match=r"broker\.stop failed"):
        await held(steps, openapi=False).close()
    assert steps.calls == ["broker.stop", "security.aclose", "mongo.close"]  # no Tuya client of its own


async def test_readiness_is_bus_and_database_then_the_services_own() -> None:
    steps = Steps()

    async def writer() -> bool:
        return False

    checks = held(steps).readiness_checks(writer=writer)
    assert list(checks) == ["bus", "database", "writer"]
    assert [await check() for check in checks.values()] == [True, True, False]
    assert steps.calls == ["ping", "db.ping"]


def test_built_from_the_settings_without_connecting() -> None:
    clients = domain_clients(OtaSettings(mongodb_uri=NOWHERE, database="ota_test"))
    try:
        assert clients.db.name == "ota_test"
        assert clients.openapi is None
        assert clients.api_security is clients.security.security
    finally:
        clients.mongo_client.close()


@pytest.mark.parametrize(
    ("bootstrap", "settings"),
    [
        (bootstrap_ota, OtaSettings),
        (bootstrap_pairing, PairingSettings),
        (bootstrap_unbinding, UnbindingSettings),
    ],
)
def test_each_domain_service_holds_its_clients_in_the_kit(bootstrap: Any, settings: Any) -> None:
    # a Tuya secret: each opens its own Tuya client, held (and closed) with the others
    service = bootstrap(settings(mongodb_uri=NOWHERE, tuya_access_secret="s" * 32))
    try:
        assert isinstance(service.clients, DomainClients)
        assert service.clients.openapi is not None
        assert set(service.readiness_checks()) >= {"bus", "database"}
    finally:
        service.clients.mongo_client.close()
