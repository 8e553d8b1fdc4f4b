"""`fleet-pairing`: run the pairing service (device consumer, token polling, HTTP API on FLEET_HTTP_PORT).

API keys are seeded from `FLEET_PAIRING_API_KEYS` (`name:key[:role+role]`) at start.
"""

from __future__ import annotations

from fleet_shared.service import prepare_process, run_service


def main() -> None:
    prepare_process()  # first: Motor sizes its thread pool on import (see fleet_shared.service.process)
    from fleet_pairing.bootstrap import SERVICE, bootstrap
    from fleet_pairing.entrypoints.app import create_app
    from fleet_pairing.settings import PairingSettings

    run_service(SERVICE, PairingSettings(), lambda settings: create_app(bootstrap(settings)))


if __name__ == "__main__":
    main()
