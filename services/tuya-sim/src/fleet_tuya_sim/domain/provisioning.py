"""How a device gets its token and Wi-Fi credentials before it activates (custom-pairing.txt, the camera QR
guide): a provisioner (an app, a factory line, a camera scanning a QR code) hands it the SSID, password and
assembled token; the device joins the site's Wi-Fi, then registers with the token.

The simulator keeps the site's networks; a device that cannot join fails with Tuya's pairing codes
(bluetooth-devices.txt): 2 "failed to find a router" (unknown SSID), 3 "the password of the target Wi-Fi
network is wrong". The password is compared and dropped: never stored, logged or put in the ground truth.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field

import orjson

ROUTER_NOT_FOUND = ("2", "The device failed to find a router.")
WRONG_WIFI_PASSWORD = ("3", "The password of the target Wi-Fi network is wrong.")
# A BLE token is issued for one device uuid (`extension.uuid`): another device cannot use it.
BLE_DEVICE_NOT_FOUND = ("122", "No Bluetooth object found.")
# Pairing failures a test or demo may force on a device (each of Tuya's codes 1-601 is accepted).
MIN_PAIRING_CODE, MAX_PAIRING_CODE = 1, 601


class BadProvisioning(ValueError):
    """A provisioning request the device could not even read (a QR payload that is not `{"s","p","t"}`)."""


@dataclass(frozen=True)
class Credentials:
    ssid: str
    password: str = field(repr=False)
    token: str = field(repr=False)  # the assembled token: region + token + secret


def parse_qr_payload(payload: str) -> Credentials:
    """The JSON a camera reads from the QR code: `{"s": ssid, "p": password, "t": assembled token}`."""
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise BadProvisioning("the QR payload is not JSON") from None
    if not isinstance(document, dict) or not all(isinstance(document.get(k), str) for k in ("s", "p", "t")):
        raise BadProvisioning('the QR payload must be {"s": ssid, "p": password, "t": token}')
    return Credentials(document["s"], document["p"], document["t"])


@dataclass
class Site:
    """The Wi-Fi networks devices can see (ssid -> password). Empty: every network is in reach and every
    password right (the default: pairing tests that do not care about Wi-Fi)."""

    networks: dict[str, str] = field(default_factory=dict, repr=False)

    def join(self, ssid: str, password: str) -> tuple[str, str] | None:
        """None when the device joins; else Tuya's (code, message) of why not."""
        if not self.networks:
            return None
        expected = self.networks.get(ssid)
        if expected is None:
            return ROUTER_NOT_FOUND
        if not hmac.compare_digest(expected.encode(), password.encode()):
            return WRONG_WIFI_PASSWORD
        return None
