"""In-memory stand-ins at the security kit's ports, and a clock tests move by hand."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from fleet_shared.security import ApiKey, AuditRecord


class ManualClock:
    def __init__(self, now: datetime = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class FakeApiKeyStore:
    def __init__(self) -> None:
        self.keys: dict[str, tuple[ApiKey, str]] = {}
        self.lookups = 0
        self.touches: list[str] = []

    async def insert(self, key: ApiKey, key_hash: str) -> bool:
        if any(h == key_hash for _, h in self.keys.values()) or key.key_id in self.keys:
            return False
        self.keys[key.key_id] = (key, key_hash)
        return True

    async def find_by_hash(self, key_hash: str) -> ApiKey | None:
        self.lookups += 1
        return next((k for k, h in self.keys.values() if h == key_hash), None)

    async def list(self) -> list[ApiKey]:
        return [k for k, _ in self.keys.values()]

    async def revoke(self, key_id: str, at: datetime) -> bool:
        if key_id not in self.keys:
            return False
        key, key_hash = self.keys[key_id]
        if key.revoked_at is None:
            self.keys[key_id] = (replace(key, revoked_at=at), key_hash)
        return True

    async def update_seeded(self, key_hash: str, name: str, roles: tuple[str, ...]) -> None:
        for key_id, (key, h) in self.keys.items():
            if h == key_hash and key.seeded and key.revoked_at is None:
                self.keys[key_id] = (replace(key, name=name, roles=roles), h)

    async def touch(self, key_id: str, at: datetime) -> None:
        self.touches.append(key_id)


class FakeAuditLog:
    def __init__(self) -> None:
        self.records: list[AuditRecord] = []
        self.down = False  # the database is unreachable

    async def append(self, record: AuditRecord) -> None:
        if self.down:
            raise ConnectionError("database down")
        if all(r.record_id != record.record_id for r in self.records):
            self.records.append(record)

    async def recent(
        self, *, subject: str | None = None, since: datetime | None = None, limit: int = 100
    ) -> list[AuditRecord]:
        found = [
            r
            for r in self.records
            if (subject is None or r.subject == subject) and (since is None or r.at >= since)
        ]
        return sorted(found, key=lambda r: r.at, reverse=True)[:limit]
