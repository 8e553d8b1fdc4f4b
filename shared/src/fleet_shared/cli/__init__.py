"""`fleet`: the operator CLI, on Typer and Rich. One command group per service, registered in `app.GROUPS`;
the output helpers every group uses (`--json`, tables, `--csv`, `--ids`, progress) are in `output`, the
HTTP client of a service (URL and API key per service) in `http`.

    fleet tuya decode < message.json
    fleet status device DEVICE_ID
    fleet status devices --product PID --csv devices.csv

Exit codes: 0 success, 1 rejected or refused (details on stdout or stderr), 2 usage.
"""

from .app import GROUPS, app, main
from .errors import EXIT_FAILED, EXIT_OK, EXIT_REJECTED, EXIT_USAGE, CliError, UsageError

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_REJECTED",
    "EXIT_USAGE",
    "GROUPS",
    "CliError",
    "UsageError",
    "app",
    "main",
]
