"""`fleet-ota`: run the OTA service (consume device events, drive releases, HTTP API on FLEET_HTTP_PORT)."""

from __future__ import annotations

from fleet_shared.service import prepare_process, run_service


def main() -> None:
    prepare_process()  # first: Motor sizes its thread pool on import (see fleet_shared.service.process)
    from fleet_ota.bootstrap import SERVICE, bootstrap
    from fleet_ota.entrypoints.app import create_app
    from fleet_ota.settings import OtaSettings

    run_service(SERVICE, OtaSettings(), lambda settings: create_app(bootstrap(settings)))


if __name__ == "__main__":
    main()
