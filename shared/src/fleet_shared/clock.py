"""The wall clock every service and kit reads by default: now, as an aware UTC datetime. What takes a clock
takes a `Clock`, so a test passes a manual one instead."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)
