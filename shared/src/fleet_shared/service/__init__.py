"""What every tuya-fleet service process shares: settings, the process's start-up (Motor's thread pool, the
garbage collector), JSON logs, tracing, the app builder with its operational endpoints and problem+json
errors, the runner, and the registry of services."""

from .app import Drains, Lifecycle, build_app
from .http import ReadinessCheck, operations_router
from .logs import configure_logging
from .problems import Answer, DomainErrors, ProblemError, problem
from .process import ProcessSettings, freeze_long_lived, prepare_process
from .registry import SERVICES, ServiceEntry, service
from .runner import run_service
from .settings import ServiceSettings
from .telemetry import configure_tracing

__all__ = [
    "SERVICES",
    "Answer",
    "DomainErrors",
    "Drains",
    "Lifecycle",
    "ProblemError",
    "ProcessSettings",
    "ReadinessCheck",
    "ServiceEntry",
    "ServiceSettings",
    "build_app",
    "configure_logging",
    "configure_tracing",
    "freeze_long_lived",
    "operations_router",
    "prepare_process",
    "problem",
    "run_service",
    "service",
]
