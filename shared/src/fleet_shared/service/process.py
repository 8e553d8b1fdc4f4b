"""Two measured start-up settings every service process gets the same way (`ProcessSettings`, part of
`ServiceSettings`; the README's configuration table lists them):

- Motor's thread pool (`MOTOR_MAX_WORKERS`, Motor's own variable; 64 here unless set). Motor runs every
  database call on one process-wide pool, sized when motor is first imported: without the variable 5 per
  CPU, 10 on a 2-core host. A call holds its thread for the whole round trip, so under load (writes queue on
  the server) pairing's bench found all 10 threads waiting on the database and the next push's reads not even
  sent. 64 threads wait cheaply; each client's connection pool (100) still bounds the load on the server.
  Because the size is read on import, `prepare_process()` is the first call of every service's `__main__`,
  which imports the service only after it.
- The garbage collector (`FLEET_GC_FREEZE`, on unless false). What exists once the app is built (modules, the
  libraries' objects, the wiring) lives as long as the process; `freeze_long_lived` takes it out of the
  collector's sight, so a full collection walks only what the work creates. Walking it all stalled
  unbinding's event loop for 0.1-0.6 s every ~20 s under load (bench/unbinding.py), and the Tuya calls paced
  meanwhile then arrived together: 1199 refusals. `run_service` freezes after `make_app`, before serving.
"""

from __future__ import annotations

import gc
import logging
import os
import sys

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger(__name__)

MOTOR_POOL_VARIABLE = "MOTOR_MAX_WORKERS"
# the module whose import sizes the pool (motor.motor_asyncio imports it)
_MOTOR_ASYNCIO = "motor.frameworks.asyncio"


class ProcessSettings(BaseSettings):
    """Read under these exact names whatever a service's own prefix (tuya-sim's FLEET_SIM_)."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    motor_max_workers: int = Field(
        64, ge=1, le=1024, validation_alias=AliasChoices(MOTOR_POOL_VARIABLE, "motor_max_workers")
    )
    gc_freeze: bool = Field(True, validation_alias=AliasChoices("FLEET_GC_FREEZE", "gc_freeze"))


def prepare_process(settings: ProcessSettings | None = None) -> ProcessSettings:
    """Size Motor's thread pool (`settings` None: from the environment). Call it before anything imports
    motor: first in `__main__`. `run_service` calls it again with the service's settings, which only warns
    when motor came first with a pool of another size."""
    settings = settings or ProcessSettings()
    size = motor_pool_size()
    if size is None:
        os.environ[MOTOR_POOL_VARIABLE] = str(settings.motor_max_workers)
    elif size != settings.motor_max_workers:
        log.warning(
            "Motor's thread pool has %d threads, not %s=%d: motor was imported before prepare_process()",
            size,
            MOTOR_POOL_VARIABLE,
            settings.motor_max_workers,
        )
    return settings


def motor_pool_size() -> int | None:
    """The size Motor's pool was given on import; None while motor is not imported."""
    module = sys.modules.get(_MOTOR_ASYNCIO)
    size = getattr(module, "max_workers", None)
    return size if isinstance(size, int) else None


def freeze_long_lived(settings: ProcessSettings) -> int:
    """Collect once, then move every object alive now out of the collector's generations (`gc.freeze`);
    the number of frozen objects (0 when `gc_freeze` is off). Objects frozen here and freed later by their
    reference counts still go; only cycles among them stay until the process ends."""
    if not settings.gc_freeze:
        return 0
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.info("froze %d long-lived objects out of the garbage collector's sight", frozen)
    return frozen
