"""Why a device failed to pair: Tuya's pairing/BLE error codes (bluetooth-devices.txt, 1-601) as typed causes.

Rules:
- every documented code maps to one `FailureCause` and keeps Tuya's own description;
- the OpenAPI codes a token result may carry instead (1010-1012 token, 1106 permission, 2001 offline) map too;
- an undocumented or non-numeric code maps to `UNKNOWN` with the code kept verbatim (never dropped);
- code 113 ("bound in the cloud") of a strongly bound product becomes `BOUND_TO_ANOTHER_ACCOUNT` with a
  pointer to batch unbinding, the only way out for such a device (session.py decides that, not this table).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class FailureCause(StrEnum):  # values are cause names, not secrets
    MALFORMED_PACKET = "malformed_packet"
    ROUTER_NOT_FOUND = "router_not_found"
    WRONG_WIFI_PASSWORD = "wrong_wifi_password"  # noqa: S105
    ROUTER_CONNECTION_FAILED = "router_connection_failed"
    DHCP_FAILED = "dhcp_failed"
    CLOUD_CONNECTION_FAILED = "cloud_connection_failed"
    CANCELLED_BY_USER = "cancelled_by_user"
    BLUETOOTH_ERROR = "bluetooth_error"
    TIMEOUT = "timeout"
    WIFI_INFO_NOT_SENT = "wifi_info_not_sent"
    TOKEN_EXPIRED = "token_expired"  # noqa: S105
    TOKEN_VOID = "token_void"  # noqa: S105
    DEVICE_NOT_FOUND = "device_not_found"
    CLOUD_ACTIVATION_FAILED = "cloud_activation_failed"
    ALREADY_BOUND = "already_bound"
    BOUND_TO_ANOTHER_ACCOUNT = "bound_to_another_account"
    PAIRING_IN_OTHER_MODE = "pairing_in_other_mode"
    OTA_FAILED = "ota_failed"
    WIFI_PARAMETERS_INVALID = "wifi_parameters_invalid"
    VISITOR_STRONG_BINDING = "visitor_strong_binding"
    HARDWARE_ENCRYPTION_FAILED = "hardware_encryption_failed"
    TOKEN_UNAVAILABLE = "token_unavailable"  # noqa: S105
    PLUG_AND_PLAY_FAILED = "plug_and_play_failed"
    UNAUTHORIZED = "unauthorized"
    ZIGBEE_COMBO_FAILED = "zigbee_combo_failed"
    DEVICE_UPGRADING = "device_upgrading"
    DEVICE_OFFLINE = "device_offline"
    UNKNOWN = "unknown"


C = FailureCause

# code -> (cause, Tuya's description). Source: Tuya's Bluetooth device guide, "Error codes".
TUYA_PAIRING_CODES: dict[int, tuple[FailureCause, str]] = {
    1: (C.MALFORMED_PACKET, "The format of the packet received by the device is wrong."),
    2: (C.ROUTER_NOT_FOUND, "The device failed to find a router."),
    3: (C.WRONG_WIFI_PASSWORD, "The password of the target Wi-Fi network is wrong."),
    4: (C.ROUTER_CONNECTION_FAILED, "The device failed to connect to a router."),
    5: (C.DHCP_FAILED, "Failed to get a Dynamic Host Configuration Protocol (DHCP)-assigned IP address."),
    6: (C.CLOUD_CONNECTION_FAILED, "Failed to connect the device to the cloud."),
    100: (C.CANCELLED_BY_USER, "The pairing process is canceled by the user."),
    101: (C.BLUETOOTH_ERROR, "An error has occurred while connecting to the device over Bluetooth."),
    102: (C.BLUETOOTH_ERROR, "An error has occurred while scanning for Bluetooth devices."),
    103: (C.BLUETOOTH_ERROR, "Failed to enable a Bluetooth channel."),
    104: (C.BLUETOOTH_ERROR, "Failed to query Bluetooth device information."),
    105: (C.BLUETOOTH_ERROR, "Failed to pair devices over Bluetooth."),
    106: (C.TIMEOUT, "The pairing task timed out."),
    107: (C.WIFI_INFO_NOT_SENT, "Failed to send Wi-Fi information."),
    108: (C.TOKEN_EXPIRED, "The token has expired."),
    109: (C.BLUETOOTH_ERROR, "Failed to query the key with which Bluetooth connections are encrypted."),
    110: (C.DEVICE_NOT_FOUND, "The specified device does not exist."),
    111: (C.CLOUD_ACTIVATION_FAILED, "Failed to register the device in the cloud."),
    112: (C.CLOUD_ACTIVATION_FAILED, "Failed to activate the device in the cloud."),
    113: (C.ALREADY_BOUND, "The specified device has been bound in the cloud."),
    114: (C.BLUETOOTH_ERROR, "The current connection is manually closed."),
    115: (C.CLOUD_ACTIVATION_FAILED, "Failed to query device information in the cloud."),
    116: (C.PAIRING_IN_OTHER_MODE, "The specified device is being paired in another mode."),
    117: (C.OTA_FAILED, "The OTA update failed."),
    118: (C.OTA_FAILED, "The OTA update timed out."),
    119: (C.WIFI_PARAMETERS_INVALID, "Failed to verify the parameters for Wi-Fi pairing."),
    120: (C.BLUETOOTH_ERROR, "Failed to send the key information."),
    121: (C.BLUETOOTH_ERROR, "Failed to find an object to be connected over Bluetooth."),
    122: (C.BLUETOOTH_ERROR, "No Bluetooth object found."),
    123: (C.VISITOR_STRONG_BINDING, "The visitor account does not support strong binding."),
    124: (C.BLUETOOTH_ERROR, "A generic Bluetooth error has occurred while processing your request."),
    125: (C.BLUETOOTH_ERROR, "Failed to enable Notify."),
    126: (C.HARDWARE_ENCRYPTION_FAILED, "A device error has occurred while processing hardware encryption."),
    127: (C.HARDWARE_ENCRYPTION_FAILED, "A cloud error has occurred while processing hardware encryption."),
    128: (
        C.WIFI_PARAMETERS_INVALID,
        "Failed to pair the non-LTE Cat.1 combo device. The password is not entered.",
    ),
    129: (C.TOKEN_UNAVAILABLE, "Failed to get the pairing token."),
    130: (C.WIFI_PARAMETERS_INVALID, "A pairing parameter error has occurred while processing your request."),
    131: (C.WIFI_PARAMETERS_INVALID, "Failed to get the Wi-Fi information of the device."),
    132: (C.PLUG_AND_PLAY_FAILED, "The API request for Plug-and-Play (PnP) pairing has failed."),
    133: (C.CLOUD_ACTIVATION_FAILED, "Failed to send the device activation information."),
    134: (C.TIMEOUT, "A timeout error has been caused by the failure to get the device online in the cloud."),
    135: (C.TIMEOUT, "A timeout error has occurred while querying device information."),
    136: (C.TIMEOUT, "A timeout error has occurred while processing the pairing command."),
    137: (C.TIMEOUT, "A timeout error has occurred while querying the Wi-Fi information."),
    138: (C.TIMEOUT, "A timeout error has occurred while sending device activation information."),
    139: (C.CLOUD_ACTIVATION_FAILED, "Failed to query device information from the cloud during activation."),
    140: (C.UNAUTHORIZED, "Unauthorized to get the binding status."),
    141: (C.PLUG_AND_PLAY_FAILED, "Failed to pull configuration certificate information for PSK3.0 devices."),
    142: (C.PLUG_AND_PLAY_FAILED, "Failed to Wi-Fi commands for to PSK3.0 combo devices."),
    143: (C.PLUG_AND_PLAY_FAILED, "Failed to send the command for PSK3.0 PnP activation in the cloud."),
    200: (C.OTA_FAILED, "An error has occurred when the device responds to the OTA update command."),
    201: (C.OTA_FAILED, "Failed to verify the OTA file for the device."),
    202: (C.OTA_FAILED, "The OTA update offset has an exception."),
    203: (C.OTA_FAILED, "Failed to acknowledge the reception of a single OTA update package."),
    204: (C.OTA_FAILED, "Failed to send the firmware for OTA update."),
    205: (C.OTA_FAILED, "The device has finally reported an OTA update failure."),
    206: (C.OTA_FAILED, "The OTA update timed out."),
    207: (C.BLUETOOTH_ERROR, "Failed to transfer big data."),
    300: (
        C.BLUETOOTH_ERROR,
        "A Media Transfer Protocol (MTP) error has occurred while transmitting Bluetooth packets.",
    ),
    301: (C.PLUG_AND_PLAY_FAILED, "Failed to send PnP product information to the device."),
    400: (C.ZIGBEE_COMBO_FAILED, "The gateway does not support Zigbee combo pairing."),
    401: (
        C.ZIGBEE_COMBO_FAILED,
        "An error has occurred while receiving the information about a Zigbee sub-device.",
    ),
    402: (
        C.ZIGBEE_COMBO_FAILED,
        "An error has occurred while receiving the command about a Zigbee sub-device.",
    ),
    403: (C.ZIGBEE_COMBO_FAILED, "The Zigbee gateway has reported a pairing error."),
    404: (C.ZIGBEE_COMBO_FAILED, "The Zigbee gateway has reported a data parsing error."),
    405: (C.ZIGBEE_COMBO_FAILED, "Failed to send gateway information during Zigbee combo pairing."),
    406: (
        C.ZIGBEE_COMBO_FAILED,
        "The device has reported the invalid gateway information during Zigbee combo pairing.",
    ),
    407: (C.ZIGBEE_COMBO_FAILED, "Parameter errors."),
    600: (C.DEVICE_UPGRADING, "Failed to control the device. The device is being updated over the air."),
    601: (C.DEVICE_OFFLINE, "Failed to control the device. The device is offline."),
}

# Token results may carry an OpenAPI code instead (the IoT Core result's example shows `"2001"`; tuya-sim
# reports token failures with the OpenAPI code of the same meaning). No overlap with the codes above.
TUYA_OPENAPI_RESULT_CODES: dict[int, tuple[FailureCause, str]] = {
    1010: (C.TOKEN_EXPIRED, "The pairing token has expired."),
    1011: (C.TOKEN_EXPIRED, "The pairing token is invalid."),
    1012: (C.TOKEN_VOID, "The pairing token is void: it already paired its devices."),
    1106: (C.UNAUTHORIZED, "Permission denied."),
    2001: (C.DEVICE_OFFLINE, "The device is offline."),
}

ALREADY_BOUND_CODE = 113
BATCH_UNBINDING_HINT = (
    "The device is strongly bound to another account: it must be unbound first, e.g. by a batch unbinding "
    "(unbinding service, POST /v1/unbinding-batches) by the product's developer or an authorized partner."
)


@dataclass(frozen=True, slots=True)
class Failure:
    """A pairing failure: Tuya's code as sent, its typed cause, and a description safe to show."""

    code: str
    cause: FailureCause
    description: str
    hint: str | None = None


def failure_for(code: str, message: str | None = None) -> Failure:
    """The typed failure for one of Tuya's codes (`"3"`, `"106"`); unknown codes are kept, never dropped."""
    text = code.strip()
    if text.isascii() and text.isdigit():
        known = TUYA_PAIRING_CODES.get(int(text)) or TUYA_OPENAPI_RESULT_CODES.get(int(text))
        if known is not None:
            return Failure(text, *known)
    return Failure(text or "unknown", FailureCause.UNKNOWN, message or "Tuya reported an undocumented code.")
