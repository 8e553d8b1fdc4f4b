"""De-duplication: which Tuya messages are the same message, and the window of recently seen ones.

Tuya pushes at least once, Pulsar redelivers what was not acknowledged, and a crash between the internal
publish and the Tuya ack redelivers a message that was already published. Each message gets a dedup key:

- `dataId` when the message has one (protocol 4 status reports, 1000 property messages): Tuya's own id;
- otherwise a hash of the protocol and the decrypted `data` (canonical JSON). Re-encryption changes the
  ciphertext (GCM nonce) but not the data, so a re-push of the same fact hashes the same, and two different
  facts never share a hash. The legacy top-level `uuid` is not used on its own: Tuya does not document it as
  a message id, and the same name holds the device's hardware uuid elsewhere; it is part of the hash anyway.

The event id is a uuid5 of the project and the dedup key, so even a duplicate that slips through (say, after
the dedup store lost a write) carries the same event id and consumers drop it (they dedupe by event id).
"""

from __future__ import annotations

import hashlib
import uuid
from collections import OrderedDict
from typing import Any

import orjson

from fleet_shared.tuya.codec import DecodedMessage

#: Namespace of ingest's event ids (uuid5); fixed forever, or ids would change across versions.
EVENT_ID_NAMESPACE = uuid.UUID("6f1c6a5e-6f57-4c1b-9a55-2f0c0e7d1a11")


def _data_id(decoded: DecodedMessage) -> str | None:
    data = decoded.data
    value = data.get("dataId")
    if value is None and isinstance(data.get("bizData"), dict):
        value = data["bizData"].get("dataId")
    if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
        return str(value)
    return None


def content_hash(protocol: int, data: dict[str, Any]) -> str:
    canonical = orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(b"%d:" % protocol + canonical).hexdigest()[:32]


def dedup_key(decoded: DecodedMessage) -> str:
    """`<protocol>:data:<device>:<dataId>` or `<protocol>:hash:<sha256/128>`."""
    if (data_id := _data_id(decoded)) is not None:
        return f"{decoded.protocol}:data:{decoded.device_id or '-'}:{data_id}"
    return f"{decoded.protocol}:hash:{content_hash(decoded.protocol, decoded.data)}"


_NAMESPACE_BYTES = EVENT_ID_NAMESPACE.bytes


def event_id(access_id: str, key: str) -> str:
    """The deterministic id of the event made from the message with dedup key `key`: the uuid5 of
    `EVENT_ID_NAMESPACE` and `<access id>/<key>`, computed as RFC 4122 does it (uuid.uuid5 builds two
    UUID objects on the way, a tenth of the hot path)."""
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + f"{access_id}/{key}".encode()).digest()[:16])  # noqa: S324 - uuid5 is SHA-1 by definition
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def dead_letter_id(access_id: str, topic: str, message_id: str) -> str:
    """Dead letters are per Pulsar message (it may not decode at all): the id follows its message id."""
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, f"{access_id}/dead-letter/{topic}/{message_id}"))


class SeenWindow:
    """Dedup keys seen in the last `ttl_s` seconds, at most `max_entries` (oldest evicted first).

    Time is passed in (`now`, seconds on any monotonic clock), so the window is pure and testable.
    """

    def __init__(self, *, ttl_s: float, max_entries: int) -> None:
        if ttl_s <= 0 or max_entries <= 0:
            raise ValueError("ttl_s and max_entries must be positive")
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._seen: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, key: object) -> bool:
        return key in self._seen

    def contains(self, key: str, now: float) -> bool:
        self._expire(now)
        return key in self._seen

    def add(self, key: str, now: float) -> None:
        self._seen[key] = now
        self._seen.move_to_end(key)
        self._expire(now)
        while len(self._seen) > self.max_entries:
            self._seen.popitem(last=False)

    def _expire(self, now: float) -> None:
        horizon = now - self.ttl_s
        seen = self._seen
        while seen:
            oldest_key, oldest_at = next(iter(seen.items()))
            if oldest_at > horizon:
                break
            del seen[oldest_key]
