"""Decrypted Tuya push payloads, one per message kind ingest maps (REFERENCE.md §3), with the event type."""

from __future__ import annotations

from typing import Any

SECRET = "4f1c9e0b7a6d5c3e2f1a0b9c8d7e6f5a"
ACCESS_ID = "ingestunitaccess0001"
DEV = "vdevo1234567890abcd"
PID = "pidabc123"
UID = "ay1600000000000abcde"
T = 1_717_000_000_000


def sample(protocol: int, data: dict[str, Any], event_type: str) -> tuple[int, dict[str, Any], str]:
    return protocol, data, event_type


def legacy(biz_code: str, biz_data: dict[str, Any] | None = None, **top: Any) -> dict[str, Any]:
    return {"devId": DEV, "productKey": PID, "bizCode": biz_code, "bizData": biz_data or {}, "ts": T, **top}


def iot(biz_code: str, biz_data: dict[str, Any]) -> dict[str, Any]:
    return {"bizCode": biz_code, "bizData": {"devId": DEV, "productId": PID, **biz_data}, "ts": T}


UNKNOWN = "device.tuya_message.unknown.v1"

SAMPLES: dict[str, tuple[int, dict[str, Any], str]] = {
    "4/status": sample(
        4,
        {
            "dataId": "d-1",
            "devId": DEV,
            "productKey": PID,
            "status": [
                {"code": "switch_1", "value": True, "t": T, "1": "true"},
                {"code": "temp", "value": 215},
            ],
        },
        "device.status.reported.v1",
    ),
    "4/status-empty": sample(4, {"dataId": "d-2", "devId": DEV, "status": []}, UNKNOWN),
    "20/online": sample(20, legacy("online", {"time": T, "uid": UID}), "device.online.v1"),
    "20/offline": sample(20, legacy("offline", {"time": T // 1000}), "device.offline.v1"),
    "20/nameUpdate": sample(
        20, legacy("nameUpdate", {"devId": DEV, "uid": UID, "name": "Lamp"}), "device.renamed.v1"
    ),
    "20/dpNameUpdate": sample(
        20, legacy("dpNameUpdate", {"devId": DEV, "dpId": "3", "name": "Brightness"}), "device.dp.renamed.v1"
    ),
    "20/bindUser": sample(
        20,
        legacy("bindUser", {"devId": DEV, "uid": UID, "ownerId": "home-1", "uuid": "hw-1", "token": "tok1"}),
        "device.bound.v1",
    ),
    "20/delete": sample(
        20, legacy("delete", {"devId": DEV, "uid": UID, "ownerId": "home-1"}), "device.removed.v1"
    ),
    "20/upgradeStatus": sample(
        20,
        legacy("upgradeStatus", {"devId": DEV, "upgradeStatus": "2", "description": "ok", "moduleType": 9}),
        "device.ota.progressed.v1",
    ),
    "20/share": sample(20, legacy("share", {"receiver": "u2", "addDevIds": [DEV]}), UNKNOWN),
    "20/deviceSignal": sample(
        20,
        legacy("deviceSignal", reportData=[{"memory": 1000, "rssi": -50, "t": T}]),
        "device.signal.reported.v1",
    ),
    "20/deviceDpCommand": sample(
        20, legacy("deviceDpCommand", command=[{"dpId": 1, "value": True}]), UNKNOWN
    ),
    "20/userRegister": sample(
        20, {"bizCode": "userRegister", "bizData": {"uid": UID, "schema": "s", "time": T}, "ts": T}, UNKNOWN
    ),
    "20/homeCreate": sample(
        20, {"bizCode": "homeCreate", "bizData": {"homeId": 1, "homeName": "H", "uid": UID}, "ts": T}, UNKNOWN
    ),
    "20/roomCreate": sample(
        20, {"bizCode": "roomCreate", "bizData": {"homeId": 1, "roomName": "R", "uid": UID}, "ts": T}, UNKNOWN
    ),
    "20/sceneExecute": sample(
        20, {"bizCode": "sceneExecute", "gid": 1, "uid": UID, "actions": [], "ts": T}, UNKNOWN
    ),
    "20/automationExternalAction": sample(
        20, {"bizCode": "automationExternalAction", "automationId": "a1", "ts": T}, UNKNOWN
    ),
    "20/unknownBizCode": sample(20, legacy("somethingNew", {"x": 1}), UNKNOWN),
    "1000/devicePropertyMessage": sample(
        1000,
        iot(
            "devicePropertyMessage",
            {"dataId": "p-1", "properties": [{"code": "switch_1", "dpId": 1, "time": T, "value": False}]},
        ),
        "device.status.reported.v1",
    ),
    "1000/deviceQueryPropertyMessage": sample(
        1000,
        iot(
            "deviceQueryPropertyMessage",
            {"dataId": "q-1", "properties": [{"code": "temp", "dpId": 2, "time": T, "value": 3}]},
        ),
        "device.status.reported.v1",
    ),
    "1000/deviceEventMessage": sample(1000, iot("deviceEventMessage", {"eventCode": "alarm"}), UNKNOWN),
    "1000/deviceActionResponseMessage": sample(1000, iot("deviceActionResponseMessage", {}), UNKNOWN),
    "1001/deviceOnline": sample(1001, iot("deviceOnline", {"uid": UID, "time": T}), "device.online.v1"),
    "1001/deviceOffline": sample(1001, iot("deviceOffline", {"uid": UID, "time": T}), "device.offline.v1"),
    "1001/deviceNameUpdate": sample(
        1001, iot("deviceNameUpdate", {"uid": UID, "name": "Plug", "uuid": "hw"}), "device.renamed.v1"
    ),
    "1001/deviceBindSpace": sample(
        1001,
        iot("deviceBindSpace", {"uid": UID, "spaceId": 77, "uuid": "hw", "token": "t"}),
        "device.bound.v1",
    ),
    "1001/deviceUnbindSpace": sample(
        1001, iot("deviceUnbindSpace", {"uid": UID, "spaceId": 77}), "device.unbound.v1"
    ),
    "1001/deviceTransfer": sample(1001, iot("deviceTransfer", {}), UNKNOWN),
    "1001/deviceFreeze": sample(1001, iot("deviceFreeze", {}), UNKNOWN),
    "1001/deviceUnFreeze": sample(1001, iot("deviceUnFreeze", {}), UNKNOWN),
    "1002/deviceOtaProgress": sample(
        1002,
        iot("deviceOtaProgress", {"progress": 40, "channel": 0, "version": "1.2.0"}),
        "device.ota.progressed.v1",
    ),
    "1010/space": sample(1010, {"bizCode": "spaceCreate", "bizData": {"spaceId": 1}}, UNKNOWN),
    "25/scene": sample(25, {"whatever": 1}, UNKNOWN),
    # unknown protocols that name a device, at the top or in bizData: the event keeps its subject and key
    "22/device-top": sample(22, {"devId": DEV, "productKey": PID, "whatever": 1, "ts": T}, UNKNOWN),
    "1010/device-bizdata": sample(
        1010, {"bizCode": "deviceSomething", "bizData": {"devId": DEV, "x": 1}, "ts": T}, UNKNOWN
    ),
}
