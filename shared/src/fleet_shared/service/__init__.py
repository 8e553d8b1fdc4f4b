"""What every tuya-fleet service process shares: settings, JSON logs, tracing, operational endpoints."""

from .http import operations_router
from .logs import configure_logging
from .settings import ServiceSettings
from .telemetry import configure_tracing

__all__ = ["ServiceSettings", "configure_logging", "configure_tracing", "operations_router"]
