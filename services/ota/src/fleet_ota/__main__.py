"""`fleet-ota`: run the OTA service (consume device events, drive releases, HTTP API on FLEET_HTTP_PORT)."""

from __future__ import annotations

from fleet_ota.bootstrap import SERVICE, bootstrap
from fleet_ota.settings import OtaSettings
from fleet_shared.service import run_service


def main() -> None:
    from fleet_ota.entrypoints.app import create_app

    run_service(SERVICE, OtaSettings(), lambda settings: create_app(bootstrap(settings)))


if __name__ == "__main__":
    main()
