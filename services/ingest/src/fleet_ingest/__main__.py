"""`fleet-ingest`: run the ingest service (consume loop + HTTP operations endpoints)."""

from __future__ import annotations

import uvicorn

from fleet_ingest.bootstrap import SERVICE, bootstrap
from fleet_ingest.entrypoints.app import create_app
from fleet_ingest.settings import IngestSettings
from fleet_shared.service import configure_logging, configure_tracing


def main() -> None:
    settings = IngestSettings()
    configure_logging(SERVICE, level=settings.log_level, fmt=settings.log_format)
    configure_tracing(SERVICE, otlp_endpoint=settings.otel_exporter_otlp_endpoint)
    app = create_app(bootstrap(settings))
    uvicorn.run(app, host=settings.http_host, port=settings.http_port, log_config=None, access_log=False)


if __name__ == "__main__":
    main()
