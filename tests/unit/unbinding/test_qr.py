"""QR sessions: the 30-device cap, expiry at the boundary, repeated scans, the 113 trigger."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from fleet_contracts.unbinding import RefusalCause
from fleet_unbinding.domain.qr import Admission, is_unbind_request, open_session

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def test_thirty_devices_are_admitted_and_the_31st_is_refused_qr_full() -> None:
    session = open_session("tok", now=NOW, validity=timedelta(minutes=5), token_expires_at=None)
    for i in range(30):
        session, decision = session.admit(f"d{i}", NOW)
        assert decision is Admission.ADMITTED
    after, decision = session.admit("d30", NOW)
    assert decision is Admission.FULL
    assert decision.refusal is RefusalCause.QR_FULL
    assert after is session
    assert len(session.admitted) == 30


def test_a_scan_at_the_expiry_instant_is_refused_qr_expired() -> None:
    session = open_session("tok", now=NOW, validity=timedelta(minutes=5), token_expires_at=None)
    just_before = NOW + timedelta(minutes=5) - timedelta(microseconds=1)
    assert session.admit("d1", just_before)[1] is Admission.ADMITTED
    _, decision = session.admit("d1", NOW + timedelta(minutes=5))
    assert decision is Admission.EXPIRED
    assert decision.refusal is RefusalCause.QR_EXPIRED


def test_a_device_scanning_twice_is_admitted_once_even_after_expiry() -> None:
    session, _ = open_session("tok", now=NOW, validity=timedelta(minutes=1), token_expires_at=None).admit(
        "d1", NOW
    )
    again, decision = session.admit("d1", NOW + timedelta(hours=1))
    assert decision is Admission.ALREADY_ADMITTED
    assert again.admitted == ("d1",)
    assert decision.refusal is None


def test_validity_is_bounded_and_never_outlives_the_token() -> None:
    token_end = NOW + timedelta(minutes=2)
    session = open_session("tok", now=NOW, validity=timedelta(minutes=5), token_expires_at=token_end)
    assert session.expires_at == token_end
    for bad in (timedelta(0), timedelta(minutes=31)):
        with pytest.raises(ValueError, match="validity"):
            open_session("tok", now=NOW, validity=bad, token_expires_at=None)


@pytest.mark.parametrize(("code", "ours"), [("113", True), (" 113", True), ("2001", False), (None, False)])
def test_only_the_already_bound_failure_is_an_unbind_request(code: str | None, ours: bool) -> None:
    assert is_unbind_request(code) is ours


def test_the_already_bound_codes_are_configurable() -> None:
    assert is_unbind_request("1106", frozenset({"113", "1106"}))
    assert not is_unbind_request("1106")
