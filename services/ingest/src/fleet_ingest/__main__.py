"""`fleet-ingest`: run the ingest service (consume loop + HTTP operations endpoints)."""

from __future__ import annotations

from fleet_shared.service import prepare_process, run_service


def main() -> None:
    prepare_process()  # first: Motor sizes its thread pool on import (see fleet_shared.service.process)
    from fleet_ingest.bootstrap import SERVICE, bootstrap
    from fleet_ingest.entrypoints.app import create_app
    from fleet_ingest.settings import IngestSettings

    run_service(SERVICE, IngestSettings(), lambda settings: create_app(bootstrap(settings)))


if __name__ == "__main__":
    main()
