"""`fleet-pairing`: run the pairing service (device consumer, token polling, HTTP API on FLEET_HTTP_PORT).

API keys are seeded from `FLEET_PAIRING_API_KEYS` (`name:key[:role+role]`) at start.
"""

from __future__ import annotations

import os

# Motor runs every database call on one process-wide thread pool, sized when motor is first imported (so
# here, before anything imports it): `MOTOR_MAX_WORKERS`, else 5 per CPU, 10 on a 2-core host. Each call
# holds its thread for the whole round trip, and a push makes two reads and two writes; under load (writes
# queue on the server) the bench showed all 10 threads waiting on the database, so the next push's reads
# could not even be sent. 64 threads wait cheaply; the connection pool (100) still bounds the server's load.
os.environ.setdefault("MOTOR_MAX_WORKERS", "64")

from fleet_pairing.bootstrap import SERVICE, bootstrap
from fleet_pairing.entrypoints.app import create_app
from fleet_pairing.settings import PairingSettings
from fleet_shared.service import run_service


def main() -> None:
    run_service(SERVICE, PairingSettings(), lambda settings: create_app(bootstrap(settings)))


if __name__ == "__main__":
    main()
