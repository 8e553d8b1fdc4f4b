"""tinytuya's `Cloud` against tuya-sim served over HTTPS (tinytuya only speaks `https://`), through its public
API only: the sim's address is its `urlhost`, the throw-away certificate authority this test makes is trusted
the way a user trusts one (`REQUESTS_CA_BUNDLE`). Every call of issue 16 passes, POSTs included (tinytuya
ends each signed header line with `\\n`), and tinytuya renews its token on the sim's 1010/1011 wording."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import tinytuya
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from fastapi.testclient import TestClient

from fleet_tuya_sim.bootstrap import TuyaSim, bootstrap
from fleet_tuya_sim.entrypoints.app import create_app
from fleet_tuya_sim.settings import SimSettings
from tests.support import free_port, until

pytestmark = pytest.mark.e2e

ACCESS_ID = "simtinytuya000000001"
ACCESS_SECRET = "tinytuya0test0secret000000000000"


@dataclass(frozen=True)
class Tls:
    ca_file: Path
    cert_file: Path
    key_file: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_tls(folder: Path) -> Tls:
    """A one-day certificate authority and a server certificate for 127.0.0.1 / localhost signed by it."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("tuya-sim test CA"))
        .issuer_name(_name("tuya-sim test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    tls = Tls(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    tls.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    tls.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    tls.key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return tls


@dataclass
class HttpsSim:
    service: TuyaSim
    port: int
    control: TestClient  # the `/sim` control API in-process (the same app, no TLS needed)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def truth(self) -> dict[str, Any]:
        devices: dict[str, Any] = self.control.get("/sim/truth", params={"messages": "false"}).json()[
            "fleet"
        ]["devices"]
        return devices


@pytest.fixture
async def https_sim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[HttpsSim]:
    tls = make_tls(tmp_path)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls.ca_file))  # requests' own variable: how users trust a CA
    port = free_port()
    settings = SimSettings(
        access_id=ACCESS_ID,
        access_secret=ACCESS_SECRET,
        devices=12,
        homes=3,
        seed=9,
        rate_limit_rps=0,
        pulsar_url="",  # push messages in memory: tinytuya reads none
    )
    service = bootstrap(settings)
    app = create_app(service)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            ssl_certfile=str(tls.cert_file),
            ssl_keyfile=str(tls.key_file),
        )
    )
    serving = asyncio.create_task(server.serve())
    try:
        await until(lambda: server.started, 30, lambda: "the HTTPS server did not start")
        yield HttpsSim(service, port, TestClient(app))
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 30)


def _cloud(host: str) -> tinytuya.Cloud:
    # A token left from an earlier run (any stale token): the constructor then makes no call to Tuya's real
    # hosts, and tinytuya's first request meets "token invalid" and fetches a fresh token from the sim.
    cloud = tinytuya.Cloud(apiRegion="eu", apiKey=ACCESS_ID, apiSecret=ACCESS_SECRET, initial_token="stale")
    cloud.urlhost = host
    return cloud


def _tinytuya_session(sim: HttpsSim) -> dict[str, Any]:
    """Every call of issue 16 (blocking: tinytuya uses requests)."""
    truth = sim.truth()
    plug = next(
        d
        for d, t in sorted(truth.items())
        if t["bound"] and t["online"] and t["product_id"] == "sim0plug0cz00001"
    )
    cloud = _cloud(sim.host)
    answers: dict[str, Any] = {"plug": plug, "truth": truth}
    answers["connect"] = cloud.getconnectstatus(plug)
    answers["token"] = cloud.token
    answers["devices"] = cloud.getdevices()
    answers["status"] = cloud.getstatus(plug)
    answers["functions"] = cloud.getfunctions(plug)
    answers["properties"] = cloud.getproperties(plug)
    answers["dps"] = cloud.getdps(plug)
    switch = not truth[plug]["dps"]["switch_1"]["value"]
    answers["switch"] = switch
    answers["command"] = cloud.sendcommand(plug, {"commands": [{"code": "switch_1", "value": switch}]})
    answers["status_after"] = cloud.getstatus(plug)
    answers["logs"] = cloud.getdevicelog(plug, evtype="5,7", size=10)
    # every token ends: tinytuya's next call meets 1010 "token invalid", renews and retries by itself
    assert sim.control.post("/sim/tokens/expire").json()["expired"] >= 1
    answers["after_expiry"] = cloud.getstatus(plug)
    answers["token_after_expiry"] = cloud.token
    return answers


async def test_every_tinytuya_cloud_call(https_sim: HttpsSim) -> None:
    answers = await asyncio.to_thread(_tinytuya_session, https_sim)
    plug, truth = answers["plug"], answers["truth"]
    assert answers["connect"] is True
    assert answers["token"] not in (None, "stale")

    bound = {d for d, t in truth.items() if t["bound"]}
    devices = answers["devices"]
    assert isinstance(devices, list), devices
    assert {d["id"] for d in devices} == bound
    assert all(d["mac"] and d["uuid"] and d["key"] and d["product_id"] for d in devices)

    status = answers["status"]
    assert status["success"] is True, status
    assert {s["code"]: s["value"] for s in status["result"]} == {
        c: v["value"] for c, v in truth[plug]["dps"].items()
    }
    for name in ("functions", "properties", "dps"):
        assert answers[name]["success"] is True, answers[name]
    assert {f["code"] for f in answers["functions"]["result"]["functions"]} == {
        "switch_1",
        "countdown_1",
        "relay_status",
    }
    assert {s["code"] for s in answers["properties"]["result"]["status"]} == set(truth[plug]["dps"])
    assert all("dp_id" in s for s in answers["dps"]["result"]["status"])

    assert answers["command"]["success"] is True, answers["command"]
    assert {"code": "switch_1", "value": answers["switch"]} in answers["status_after"]["result"]
    logs = answers["logs"]
    assert logs["success"] is True, logs
    assert {entry["event_id"] for entry in logs["result"]["logs"]} == {5, 7}

    assert answers["after_expiry"]["success"] is True, answers["after_expiry"]
    assert answers["token_after_expiry"] != answers["token"]
