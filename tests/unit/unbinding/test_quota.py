"""Quota arithmetic: days (UTC and offset) at the boundary, limits and their overrides, usage."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from fleet_unbinding.domain import quota
from fleet_unbinding.domain.quota import CounterKey, QuotaDay, QuotaError, QuotaScope, Usage

pytestmark = pytest.mark.unit

AT = datetime(2026, 11, 29, tzinfo=UTC)


def test_utc_days_change_exactly_at_midnight() -> None:
    days = QuotaDay()
    last_instant = datetime(2026, 11, 29, 23, 59, 59, 999_999, tzinfo=UTC)
    assert days.of(last_instant) == date(2026, 11, 29)
    assert days.of(last_instant + timedelta(microseconds=1)) == date(2026, 11, 30)
    assert days.resets_at(last_instant) == datetime(2026, 11, 30, tzinfo=UTC)


def test_a_day_is_counted_in_utc_whatever_the_timezone_of_the_instant() -> None:
    tokyo = datetime(2026, 11, 30, 8, 0, tzinfo=UTC).astimezone(ZoneInfo("Asia/Tokyo"))
    assert QuotaDay().key(tokyo) == "2026-11-30"
    with pytest.raises(ValueError, match="aware"):
        QuotaDay().of(datetime(2026, 11, 30, 8, 0))


def test_an_offset_day_starts_at_local_midnight() -> None:
    china = QuotaDay(timedelta(hours=8))
    assert china.key(datetime(2026, 11, 29, 15, 59, 59, tzinfo=UTC)) == "2026-11-29"
    assert china.key(datetime(2026, 11, 29, 16, 0, tzinfo=UTC)) == "2026-11-30"
    assert china.resets_at(datetime(2026, 11, 29, 15, 0, tzinfo=UTC)) == datetime(
        2026, 11, 29, 16, 0, tzinfo=UTC
    )


def test_counters_of_one_device_are_the_account_then_the_product_of_the_day() -> None:
    account, product = quota.counter_keys("op", "p1", "2026-11-29")
    assert (account.scope, account.subject, product.scope, product.subject) == (
        QuotaScope.ACCOUNT,
        "op",
        QuotaScope.PRODUCT,
        "p1",
    )
    assert account.id != CounterKey(QuotaScope.ACCOUNT, "op", "2026-11-30").id
    assert quota.unit_id("b1", "d1") == quota.unit_id("b1", "d1") != quota.unit_id("b2", "d1")


def test_the_default_limit_is_100_and_the_latest_override_counts() -> None:
    assert quota.limit_of([]) == 100
    first = quota.override(
        [], scope=QuotaScope.ACCOUNT, subject="op", limit=500, reason="T-1", actor="a", at=AT
    )
    second = quota.override(
        [first], scope=QuotaScope.ACCOUNT, subject="op", limit=50, reason="T-2", actor="a", at=AT
    )
    assert (first.seq, second.seq) == (1, 2)
    assert quota.limit_of([second, first]) == 50
    other = quota.override(
        [first], scope=QuotaScope.PRODUCT, subject="op", limit=7, reason="T", actor="a", at=AT
    )
    assert other.seq == 1  # histories are per scope and subject


@pytest.mark.parametrize(("limit", "reason"), [(-1, "T-1"), (quota.MAX_DAILY_LIMIT + 1, "T-1"), (10, "  ")])
def test_an_override_needs_a_sane_limit_and_a_reason(limit: int, reason: str) -> None:
    with pytest.raises(QuotaError):
        quota.override(
            [], scope=QuotaScope.PRODUCT, subject="p", limit=limit, reason=reason, actor="a", at=AT
        )


def test_remaining_never_goes_negative_when_a_limit_is_lowered_below_use() -> None:
    assert Usage(QuotaScope.PRODUCT, "p", "2026-11-29", 100, 40, AT).remaining == 60
    assert Usage(QuotaScope.PRODUCT, "p", "2026-11-29", 10, 40, AT).remaining == 0
