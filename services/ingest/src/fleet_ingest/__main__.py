"""`fleet-ingest`: run the ingest service (consume loop + HTTP operations endpoints)."""

from __future__ import annotations

from fastapi import FastAPI

from fleet_ingest.bootstrap import SERVICE, bootstrap
from fleet_ingest.entrypoints.app import create_app
from fleet_ingest.settings import IngestSettings
from fleet_shared.service import run_service


def make_app(settings: IngestSettings) -> FastAPI:
    return create_app(bootstrap(settings))


def main() -> None:
    run_service(SERVICE, IngestSettings(), make_app)


if __name__ == "__main__":
    main()
