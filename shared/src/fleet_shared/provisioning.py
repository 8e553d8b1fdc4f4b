"""Create the Pulsar tenants, namespaces and topics tuya-fleet expects, through the admin REST API.

Idempotent (existing ones are left alone), so every deployment runs it before the services start:
`python -m fleet_shared.provisioning --admin-url http://pulsar:8080 [--tuya-access-id ID]`.
With admin authentication on, it sends the services' token (`FLEET_PULSAR_AUTH_TOKEN`, as `Authorization:
Bearer`); an https:// admin URL signed by a private CA is trusted through `FLEET_PULSAR_TLS_TRUST_CERTS_FILE`.
The namespaces come from the topic registry in fleet_contracts. With a Tuya access id it also lays out
Tuya's side as Tuya does (tenant = access id, namespace `out`, partitioned topic `event`), which the
simulator publishes to.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import urllib.error
import urllib.request
from typing import Any

from fleet_contracts import topics

TUYA_EVENT_PARTITIONS = 11  # Tuya's production topic has 11 partitions
TUYA_RETENTION_SECONDS = 7200  # Tuya deletes unconsumed messages after 2 hours


class ProvisioningError(RuntimeError):
    pass


class PulsarAdmin:
    def __init__(
        self,
        admin_url: str,
        timeout: float = 30.0,
        *,
        token: str | None = None,
        tls_trust_certs_file: str | None = None,
    ) -> None:
        self.base = admin_url.rstrip("/") + "/admin/v2/"
        self.timeout = timeout
        self._headers = {"Content-Type": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        # None: the default trust store (which honours SSL_CERT_FILE)
        self._tls = ssl.create_default_context(cafile=tls_trust_certs_file) if tls_trust_certs_file else None

    def _open(self, method: str, path: str, body: object | None = None) -> Any:
        request = urllib.request.Request(  # noqa: S310 - the operator-configured admin URL
            self.base + path,
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers=self._headers,
        )
        return urllib.request.urlopen(request, timeout=self.timeout, context=self._tls)  # noqa: S310

    def call(self, method: str, path: str, body: object | None = None) -> int:
        """One admin call; 409 (already exists) counts as success."""
        try:
            with self._open(method, path, body) as response:
                return int(response.status)
        except urllib.error.HTTPError as err:
            if err.code == 409:
                return 409
            raise ProvisioningError(
                f"Pulsar admin {method} {path}: HTTP {err.code} {err.read()[:300]!r}"
            ) from err
        except urllib.error.URLError as err:
            raise ProvisioningError(f"Pulsar admin {method} {path}: {err.reason}") from err

    def get(self, path: str) -> Any:
        """A GET of the admin API, its JSON answer (`ProvisioningError` on an HTTP or connection error)."""
        try:
            with self._open("GET", path) as response:
                return json.load(response)
        except urllib.error.HTTPError as err:
            raise ProvisioningError(f"Pulsar admin GET {path}: HTTP {err.code}") from err
        except urllib.error.URLError as err:
            raise ProvisioningError(f"Pulsar admin GET {path}: {err.reason}") from err

    def clusters(self) -> list[str]:
        try:
            with self._open("GET", "clusters") as response:
                return list(json.load(response))
        except urllib.error.HTTPError as err:
            # 401/403: the token is missing or lacks the super-user role provisioning needs
            raise ProvisioningError(
                f"Pulsar admin GET clusters: HTTP {err.code} {err.read()[:300]!r}"
            ) from err
        except urllib.error.URLError as err:
            raise ProvisioningError(f"Pulsar admin GET clusters: {err.reason}") from err


def provision(
    admin_url: str,
    tuya_access_id: str | None = None,
    *,
    token: str | None = None,
    tls_trust_certs_file: str | None = None,
) -> list[str]:
    """Create what is missing; returns the namespaces ensured."""
    admin = PulsarAdmin(admin_url, token=token, tls_trust_certs_file=tls_trust_certs_file)
    clusters = admin.clusters()
    ensured: list[str] = []
    for tenant in sorted({ns.split("/")[0] for ns in topics.namespaces()}):
        admin.call("PUT", f"tenants/{tenant}", {"adminRoles": [], "allowedClusters": clusters})
    for namespace in topics.namespaces():
        admin.call("PUT", f"namespaces/{namespace}")
        ensured.append(namespace)
    # every internal topic, so nothing depends on the broker creating topics on first use (often off in
    # production); non-partitioned, as the registry declares them
    for topic in topics.ALL:
        admin.call("PUT", "persistent/" + topic.name.removeprefix("persistent://"))
    if tuya_access_id:
        ensured.append(_provision_tuya_layout(admin, tuya_access_id, clusters))
    return ensured


def _provision_tuya_layout(admin: PulsarAdmin, access_id: str, clusters: list[str]) -> str:
    namespace = f"{access_id}/out"
    admin.call("PUT", f"tenants/{access_id}", {"adminRoles": [], "allowedClusters": clusters})
    admin.call("PUT", f"namespaces/{namespace}")
    admin.call("POST", f"namespaces/{namespace}/messageTTL", TUYA_RETENTION_SECONDS)
    admin.call("PUT", f"persistent/{namespace}/event/partitions", TUYA_EVENT_PARTITIONS)
    admin.call("PUT", f"persistent/{namespace}/event-test")
    return namespace


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--admin-url", default=os.environ.get("FLEET_PULSAR_ADMIN_URL", "http://127.0.0.1:8080")
    )
    parser.add_argument("--tuya-access-id", default=os.environ.get("FLEET_TUYA_ACCESS_ID"))
    args = parser.parse_args(argv)
    # from the environment only (a Secret), never an argument: arguments show in the process list
    token = os.environ.get("FLEET_PULSAR_AUTH_TOKEN") or None
    ca_file = os.environ.get("FLEET_PULSAR_TLS_TRUST_CERTS_FILE") or None
    for namespace in provision(
        args.admin_url, args.tuya_access_id, token=token, tls_trust_certs_file=ca_file
    ):
        print(f"ensured {namespace}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
