"""QR unbinding sessions.

Rules (Tuya's guide, "QR code mode"; the issue):
- A session QR serves at most 30 devices (`MAX_DEVICES_PER_QR`) and is valid for a short time (minutes,
  configurable, never longer than the pairing token Tuya issued for it).
- A reset, still-bound device that scans it fails to pair with Tuya's code 113 ("already bound"): that
  failure is the device's request to be unbound. Other pairing failures are not ours.
- A scan at or after `expires_at` is refused `qr_expired`; the 31st distinct device is refused `qr_full`.
- The same device scanning twice is the same request (admitted once).
- The payload `{"s", "p", "t"}` carries the Wi-Fi password: it is returned to the operator once and never
  stored, logged or put in an event (only the bare token is kept, to match scans).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from fleet_contracts.unbinding import MAX_DEVICES_PER_QR, RefusalCause

ALREADY_BOUND_CODES = frozenset({"113"})
MAX_VALIDITY = timedelta(minutes=30)


class Admission(StrEnum):
    ADMITTED = "admitted"
    ALREADY_ADMITTED = "already_admitted"
    EXPIRED = "expired"
    FULL = "full"

    @property
    def refusal(self) -> RefusalCause | None:
        return {Admission.EXPIRED: RefusalCause.QR_EXPIRED, Admission.FULL: RefusalCause.QR_FULL}.get(self)


@dataclass(frozen=True, slots=True)
class QrSession:
    token: str  # the bare pairing token (not a credential on its own)
    expires_at: datetime
    capacity: int = MAX_DEVICES_PER_QR
    admitted: tuple[str, ...] = ()

    def is_expired(self, now: datetime) -> bool:
        return now >= self.expires_at

    def admit(self, device_id: str, now: datetime) -> tuple[QrSession, Admission]:
        """A device scanned the QR (pairing failed with 113): the session after it, and the decision."""
        if device_id in self.admitted:
            return self, Admission.ALREADY_ADMITTED
        if self.is_expired(now):
            return self, Admission.EXPIRED
        if len(self.admitted) >= self.capacity:
            return self, Admission.FULL
        return replace(self, admitted=(*self.admitted, device_id)), Admission.ADMITTED


def open_session(
    token: str, *, now: datetime, validity: timedelta, token_expires_at: datetime | None
) -> QrSession:
    """A new session: valid for `validity` (at most 30 min), never beyond the token's own expiry."""
    if not timedelta(0) < validity <= MAX_VALIDITY:
        raise ValueError(f"QR validity must be positive and at most {MAX_VALIDITY}")
    expires_at = now + validity
    if token_expires_at is not None:
        expires_at = min(expires_at, token_expires_at)
    return QrSession(token, expires_at)


def is_unbind_request(
    pairing_error_code: str | None, already_bound: frozenset[str] = ALREADY_BOUND_CODES
) -> bool:
    """Whether a pairing failure means "this device is still bound" (the QR unbinding trigger; the codes
    are configurable because Tuya documents 113 in the guide while other APIs answer a permission code)."""
    return pairing_error_code is not None and pairing_error_code.strip() in already_bound
