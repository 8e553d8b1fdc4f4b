"""What operators and other systems ask pairing to do."""

from __future__ import annotations

from dataclasses import dataclass

from fleet_contracts.pairing import PairingMode
from fleet_pairing.domain.credentials import WifiCredentials
from fleet_pairing.domain.session import InvalidSession, SessionRequest


@dataclass(frozen=True, slots=True)
class OpenSession:
    """Open a pairing session. `wifi` only for QR mode: it builds the payload and is never kept."""

    request: SessionRequest
    wifi: WifiCredentials | None = None

    def __post_init__(self) -> None:
        if self.request.mode is PairingMode.QR and self.wifi is None:
            raise InvalidSession("wifi", "QR mode needs the Wi-Fi SSID and password to build the QR payload")
        if self.request.mode is not PairingMode.QR and self.wifi is not None:
            raise InvalidSession("wifi", "only QR mode takes Wi-Fi credentials (they are never stored)")

    def __repr__(self) -> str:  # the dataclass repr would hold the Wi-Fi credentials object; keep it out
        return f"OpenSession(request={self.request!r}, wifi={'<given>' if self.wifi else None})"


@dataclass(frozen=True, slots=True)
class CancelSession:
    session_id: str


@dataclass(frozen=True, slots=True)
class CheckToken:
    """Is this token still honoured (e.g. before a custom provisioner hands it to a device)?"""

    token: str
