"""Ground truth: every message published (in publication order, with its id and what a correct consumer
must make of it) and the final state of every device. Never holds secrets: no local keys, no token secrets."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from fleet_tuya_sim.domain.fleet import Fleet

ACCEPT = "accept"
UNKNOWN_PROTOCOL = "unknown_protocol"


@dataclass
class MessageRecord:
    seq: int  # position in the published stream (after chaos: shuffles and duplicates included)
    tid: str  # Pulsar property `tid`; duplicates share the original's
    key: str  # Pulsar message key (device id)
    protocol: int
    kind: str  # bizCode, `statusReport`, or the malformation's name
    mode: str  # aes_gcm / aes_ecb
    t: int
    # What a correct consumer makes of it: `accept`, `unknown_protocol`, or the codec's RejectReason value.
    expected: str = ACCEPT
    data: dict[str, Any] | None = None  # plaintext payload (None for malformed messages)
    malformed: str | None = None
    duplicate_of: str | None = None  # tid of the original
    replayed: bool = False  # a late re-push of the original (re-encrypted, long after it), not a chaos twin
    message_id: str | None = None  # Pulsar message id once the broker confirmed it
    error: str | None = None  # publish failure

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class GroundTruth:
    def __init__(self, max_messages: int = 1_000_000) -> None:
        self.max_messages = max_messages
        self.messages: list[MessageRecord] = []
        self.dropped_records = 0
        self._seq = 0

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def record(self, message: MessageRecord) -> None:
        if len(self.messages) >= self.max_messages:
            self.dropped_records += 1
            return
        self.messages.append(message)

    def summary(self) -> dict[str, Any]:
        by_expected: dict[str, int] = {}
        for m in self.messages:
            by_expected[m.expected] = by_expected.get(m.expected, 0) + 1
        return {
            "published": len(self.messages),
            "confirmed": sum(1 for m in self.messages if m.message_id is not None),
            "failed": sum(1 for m in self.messages if m.error is not None),
            "duplicates": sum(1 for m in self.messages if m.duplicate_of is not None),
            "replayed": sum(1 for m in self.messages if m.replayed),
            # injected malformed messages (their chaos duplicates count as duplicates)
            "malformed": sum(1 for m in self.messages if m.malformed is not None and m.duplicate_of is None),
            "by_expected": by_expected,
            "records_dropped": self.dropped_records,
        }


def device_truth(fleet: Fleet, device_id: str) -> dict[str, Any]:
    device = fleet.devices[device_id]
    product = fleet.product_of(device)
    return {
        "device_id": device.device_id,
        "uuid": device.uuid,
        "product_id": device.product_id,
        "category": product.category,
        "name": device.name,
        "uid": device.uid,
        "home_id": device.home_id,
        "region": device.region,
        "bound": device.bound,
        "online": device.online,
        "binding_mode": device.binding_mode.value,
        "low_power": device.low_power,
        "firmware": {str(ch): v for ch, v in sorted(device.firmware.items())},
        "dps": {
            dp.code: {"dp_id": dp.dp_id, "value": device.dps[dp.code].value, "t": device.dps[dp.code].t}
            for dp in product.dps
        },
        "dp_names": {str(k): v for k, v in device.dp_names.items()},
    }


def fleet_truth(fleet: Fleet) -> dict[str, Any]:
    return {
        "seed": fleet.spec.seed,
        "products": sorted(fleet.products),
        "homes": [
            {"home_id": h.home_id, "name": h.name, "owner_uid": h.owner_uid, "region": h.region}
            for h in fleet.homes.values()
        ],
        "devices": {device_id: device_truth(fleet, device_id) for device_id in fleet.devices},
        "pairing_tokens": [
            {
                "token": t.token,
                "uid": t.uid,
                "home_id": t.home_id,
                "region": t.region,
                "pairing_type": t.pairing_type,
                "created_ms": t.created_ms,
                "expire_ms": t.expire_ms,
                "max_devices": t.max_devices,
                **t.result(),
            }
            for t in fleet.tokens.values()
        ],
        "ota_jobs": [
            {
                "device_id": j.device_id,
                "channel": j.channel,
                "from_version": j.from_version,
                "to_version": j.to_version,
                "outcome": j.outcome.value,
                "upgrade_status": int(j.status),
                "progress": j.progress,
                "started_ms": j.started_ms,
                "finished_ms": j.finished_ms,
            }
            for j in fleet.ota_jobs.values()
        ],
        "notifications": list(fleet.notifications),
    }
