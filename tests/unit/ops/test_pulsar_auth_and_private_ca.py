"""What the chart's Pulsar token and private CA settings reach in the code: the provisioning Job's admin calls
(Bearer token, TLS trust) and the simulator's own provisioning at start-up, the services' broker client
options, ingest's client of the simulator's topic on our bus, and the clients that read SSL_CERT_FILE
(httpx for Tuya's OpenAPI and OIDC, MongoDB's driver)."""

from __future__ import annotations

import ssl

import httpx
import pulsar
import pytest
from prometheus_client import CollectorRegistry
from pymongo import MongoClient

from fleet_contracts import topics
from fleet_ingest.adapters.tuya_consumer import PulsarTuyaSource
from fleet_ingest.bootstrap import bootstrap as bootstrap_ingest
from fleet_ingest.settings import IngestSettings
from fleet_shared.provisioning import ProvisioningError, PulsarAdmin, main, provision
from fleet_shared.service.clients import (
    provision_topics,
    pulsar_broker,
    pulsar_client_kwargs,
    pulsar_client_options,
)
from fleet_shared.service.settings import ServiceSettings
from fleet_tuya_sim.bootstrap import bootstrap as bootstrap_sim
from fleet_tuya_sim.settings import SimSettings
from tests.unit.ops.tls import PrivateCa, https_server, make_private_ca

pytestmark = pytest.mark.unit

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJmbGVldCJ9.c2lnbmF0dXJl"  # a made-up token


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> PrivateCa:
    return make_private_ca(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No trust or token settings from the environment the tests run in."""
    for variable in (
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "FLEET_PULSAR_AUTH_TOKEN",
        "FLEET_PULSAR_TLS_TRUST_CERTS_FILE",
        "FLEET_PULSAR_URL",
        "FLEET_PULSAR_ADMIN_URL",
        "FLEET_TUYA_PULSAR_URL",
        "FLEET_TUYA_PULSAR_AUTH",
    ):
        monkeypatch.delenv(variable, raising=False)
    return monkeypatch


def subjects(context: ssl.SSLContext) -> set[str]:
    return {dict(n[0] for n in c["subject"]).get("commonName", "") for c in context.get_ca_certs()}


# --- the provisioning Job ----------------------------------------------------------------------------------


def test_provisioning_sends_the_token_and_trusts_the_private_ca(ca: PrivateCa) -> None:
    with https_server(ca, {"/admin/v2/clusters": ["standalone"]}) as (url, seen):
        ensured = provision(url, "tuyaaccess01", token=TOKEN, tls_trust_certs_file=str(ca.ca_file))
    assert "tuyaaccess01/out" in ensured
    assert seen.requests[0][:2] == ("GET", "/admin/v2/clusters")
    assert {auth for _, _, auth in seen.requests} == {f"Bearer {TOKEN}"}
    assert ("PUT", "/admin/v2/tenants/fleet", f"Bearer {TOKEN}") in seen.requests
    # every topic of the registry, the domain services' included, exists before any service starts
    created = {path for method, path, _ in seen.requests if method == "PUT"}
    for topic in topics.ALL:
        assert "/admin/v2/persistent/" + topic.name.removeprefix("persistent://") in created, topic.name
    domain = (
        topics.PAIRING_EVENTS,
        topics.UNBINDING_EVENTS,
        topics.UNBINDING_COMMANDS,
        topics.OTA_RELEASE_EVENTS,
    )
    assert {t.name for t in domain} <= {t.name for t in topics.ALL}


def test_provisioning_refuses_an_admin_url_signed_by_an_unknown_ca(ca: PrivateCa, clean_env: object) -> None:
    with https_server(ca, {}) as (url, seen), pytest.raises(ProvisioningError, match="CERTIFICATE_VERIFY"):
        PulsarAdmin(url, token=TOKEN).clusters()
    assert not seen.requests  # the token never left over an untrusted connection


def test_provisioning_without_a_token_sends_no_authorization(ca: PrivateCa) -> None:
    with https_server(ca, {"/admin/v2/clusters": ["standalone"]}) as (url, seen):
        assert PulsarAdmin(url, tls_trust_certs_file=str(ca.ca_file)).clusters() == ["standalone"]
    assert seen.requests == [("GET", "/admin/v2/clusters", None)]


def test_provisioning_cli_reads_token_and_ca_from_the_environment(
    ca: PrivateCa, clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_env.setenv("FLEET_PULSAR_AUTH_TOKEN", TOKEN)
    clean_env.setenv("FLEET_PULSAR_TLS_TRUST_CERTS_FILE", str(ca.ca_file))
    with https_server(ca, {"/admin/v2/clusters": ["standalone"]}) as (url, seen):
        assert main(["--admin-url", url]) == 0
    assert {auth for _, _, auth in seen.requests} == {f"Bearer {TOKEN}"}
    out = capsys.readouterr().out
    assert "ensured fleet/device" in out
    assert TOKEN not in out


def test_services_provision_with_the_token_and_the_ca_from_their_settings(
    ca: PrivateCa, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("FLEET_PULSAR_AUTH_TOKEN", TOKEN)
    clean_env.setenv("FLEET_PULSAR_TLS_TRUST_CERTS_FILE", str(ca.ca_file))
    with https_server(ca, {"/admin/v2/clusters": ["standalone"]}) as (url, seen):
        ensured = provision_topics(ServiceSettings(pulsar_admin_url=url))
    assert "fleet/device" in ensured
    assert {auth for _, _, auth in seen.requests} == {f"Bearer {TOKEN}"}


async def test_the_simulator_provisions_its_topics_at_start_with_the_token_and_the_ca(
    ca: PrivateCa, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("FLEET_PULSAR_AUTH_TOKEN", TOKEN)
    clean_env.setenv("FLEET_PULSAR_TLS_TRUST_CERTS_FILE", str(ca.ca_file))
    with https_server(ca, {"/admin/v2/clusters": ["standalone"]}) as (url, seen):
        settings = SimSettings(pulsar_admin_url=url, provision=True)
        sim = bootstrap_sim(settings, create_fleet=False)
        await sim.start()
        await sim.stop()
    tuya_topic = f"/admin/v2/persistent/{settings.access_id}/out/event/partitions"
    assert ("PUT", tuya_topic, f"Bearer {TOKEN}") in seen.requests
    assert {auth for _, _, auth in seen.requests} == {f"Bearer {TOKEN}"}


# --- the services' broker client ---------------------------------------------------------------------------


def test_broker_options_carry_the_token_and_the_trust_file(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("FLEET_PULSAR_AUTH_TOKEN", TOKEN)
    clean_env.setenv("FLEET_PULSAR_TLS_TRUST_CERTS_FILE", "/etc/tuya-fleet/ca/ca.crt")
    options = pulsar_client_options(ServiceSettings())
    assert isinstance(options["authentication"], pulsar.AuthenticationToken)
    assert options["client_options"] == {"tls_trust_certs_file_path": "/etc/tuya-fleet/ca/ca.crt"}
    # the settings never show the token
    assert TOKEN not in repr(ServiceSettings())


def test_a_plain_local_broker_gets_no_options(clean_env: object) -> None:
    assert pulsar_client_options(ServiceSettings()) == {}


def test_the_simulator_reads_the_same_variables_despite_its_own_prefix(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("FLEET_PULSAR_AUTH_TOKEN", TOKEN)
    clean_env.setenv("FLEET_PULSAR_TLS_TRUST_CERTS_FILE", "/ca.crt")
    settings = SimSettings()
    assert settings.pulsar_auth_token.get_secret_value() == TOKEN
    assert settings.pulsar_tls_trust_certs_file == "/ca.crt"


def test_the_broker_is_built_with_them(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("FLEET_PULSAR_AUTH_TOKEN", TOKEN)
    clean_env.setenv("FLEET_PULSAR_TLS_TRUST_CERTS_FILE", "/ca.crt")
    broker = pulsar_broker(ServiceSettings(pulsar_url="pulsar+ssl://broker:6651"))
    # the keywords pulsar.Client receives in connect()
    kwargs = broker._client_kwargs
    assert isinstance(kwargs["authentication"], pulsar.AuthenticationToken)
    assert kwargs["tls_trust_certs_file_path"] == "/ca.crt"
    assert broker._url == "pulsar+ssl://broker:6651"


def test_a_client_of_our_own_gets_the_same_token_and_trust_file(clean_env: pytest.MonkeyPatch) -> None:
    assert pulsar_client_kwargs(ServiceSettings()) == {}
    clean_env.setenv("FLEET_PULSAR_AUTH_TOKEN", TOKEN)
    clean_env.setenv("FLEET_PULSAR_TLS_TRUST_CERTS_FILE", "/ca.crt")
    kwargs = pulsar_client_kwargs(ServiceSettings())
    assert isinstance(kwargs.pop("authentication"), pulsar.AuthenticationToken)
    assert kwargs == {"tls_trust_certs_file_path": "/ca.crt"}


# --- ingest's client of Tuya's topic -----------------------------------------------------------------------

SECRET = "0123456789abcdef01234567"


def ingest_source(**settings: object) -> PulsarTuyaSource:
    settings = {"tuya_access_secret": SECRET, **settings}
    ingest = bootstrap_ingest(IngestSettings.model_validate(settings), registry=CollectorRegistry())
    getattr(ingest.mongo_client, "close")()  # noqa: B009 - typed `object` in Ingest
    return ingest.source


def test_ingest_reads_the_simulators_topic_on_our_bus_with_the_bus_token_and_ca(
    clean_env: pytest.MonkeyPatch,
) -> None:
    clean_env.setenv("FLEET_PULSAR_AUTH_TOKEN", TOKEN)
    clean_env.setenv("FLEET_PULSAR_TLS_TRUST_CERTS_FILE", "/ca.crt")
    kwargs = ingest_source(pulsar_url="pulsar+ssl://broker:6651")._client_kwargs
    # our bus's token, not Tuya's auth1, although the URL is pulsar+ssl:// as Tuya's cloud is
    assert isinstance(kwargs["authentication"], pulsar.AuthenticationToken)
    assert kwargs["tls_trust_certs_file_path"] == "/ca.crt"


def test_ingest_reads_tuyas_cloud_with_tuyas_auth1_never_the_bus_token(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("FLEET_PULSAR_AUTH_TOKEN", TOKEN)
    kwargs = ingest_source(tuya_pulsar_url="pulsar+ssl://mqe.tuyaeu.com:7285")._client_kwargs
    assert isinstance(kwargs["authentication"], pulsar.AuthenticationBasic)
    assert "tls_trust_certs_file_path" not in kwargs


def test_a_plain_local_bus_gets_no_authentication(clean_env: object) -> None:
    assert "authentication" not in ingest_source()._client_kwargs


def test_tuyas_auth1_and_another_authentication_together_are_refused() -> None:
    with pytest.raises(ValueError, match="one authentication"):
        PulsarTuyaSource(
            service_url="pulsar://broker:6650",
            access_id="acc1",
            access_secret=SECRET,
            authenticate=True,
            client_options={"authentication": pulsar.AuthenticationToken(TOKEN)},
        )


# --- the clients that read SSL_CERT_FILE -------------------------------------------------------------------


async def test_httpx_clients_trust_the_bundle_named_by_ssl_cert_file(
    ca: PrivateCa, clean_env: pytest.MonkeyPatch
) -> None:
    """The Tuya OpenAPI client and the OIDC key fetcher build a default `httpx.AsyncClient`."""
    with https_server(ca, {"/v1.0/token": {"success": True}}) as (url, seen):
        async with httpx.AsyncClient() as untrusting:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY"):
                await untrusting.get(url + "/v1.0/token")
        clean_env.setenv("SSL_CERT_FILE", str(ca.ca_file))
        async with httpx.AsyncClient() as trusting:
            assert (await trusting.get(url + "/v1.0/token")).json() == {"success": True}
    assert [path for _, path, _ in seen.requests] == ["/v1.0/token"]


def test_mongodb_driver_trusts_the_bundle_named_by_ssl_cert_file(
    ca: PrivateCa, clean_env: pytest.MonkeyPatch
) -> None:
    """Without a tlsCAFile, pymongo's TLS context loads the default trust, which reads SSL_CERT_FILE. (The
    chart sets no tlsCAFile: pymongo turns TLS on for any tls* option, which would break a plain URI.)"""
    clean_env.setenv("SSL_CERT_FILE", str(ca.ca_file))
    client: MongoClient[dict[str, object]] = MongoClient(
        "mongodb://db.example:27017/?tls=true", connect=False
    )
    try:
        context = client.options.pool_options._ssl_context  # the driver's own context, not public API
        assert isinstance(context, ssl.SSLContext)
        assert ca.common_name in subjects(context)
    finally:
        client.close()
    plain: MongoClient[dict[str, object]] = MongoClient("mongodb://db.example:27017/", connect=False)
    try:
        assert plain.options.pool_options._ssl_context is None  # the bundle alone does not turn TLS on
    finally:
        plain.close()
