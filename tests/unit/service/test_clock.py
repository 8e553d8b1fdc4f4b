"""The one default wall clock (`fleet_shared.clock.utcnow`), read by the security kit and the services'
wiring alike: aware and in UTC, so a comparison with a stored (UTC) time never mixes naive and aware."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from datetime import UTC

import pytest

from fleet_shared.clock import utcnow
from fleet_shared.security import ApiSecurity, security_kit
from fleet_unbinding.bootstrap import bootstrap as bootstrap_unbinding

pytestmark = pytest.mark.unit


def test_now_is_aware_utc_and_the_wall_clocks() -> None:
    now = utcnow()
    assert now.tzinfo is UTC
    assert abs(now.timestamp() - time.time()) < 1.0


@pytest.mark.parametrize("takes_a_clock", [security_kit, ApiSecurity, bootstrap_unbinding])
def test_what_takes_a_clock_defaults_to_it(takes_a_clock: Callable[..., object]) -> None:
    assert inspect.signature(takes_a_clock).parameters["clock"].default is utcnow
