"""Refusals of the simulated cloud, with the Tuya error code an OpenAPI caller would see (REFERENCE §4)."""

from __future__ import annotations

DATA_NOT_EXIST = 1000
PARAM_ILLEGAL = 1109
PERMISSION_DENY = 1106
DEVICE_OFFLINE = 2001
NOT_SUPPORTED = 2008
DEVICE_NOT_EXIST = 2010


class CloudRefusal(Exception):
    """An operation the cloud refuses; `code` and `msg` go into Tuya's error envelope as they are."""

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(f"{code}: {msg}")
        self.code = code
        self.msg = msg


def device_not_exist(device_id: str) -> CloudRefusal:
    return CloudRefusal(DEVICE_NOT_EXIST, "device not exist")
