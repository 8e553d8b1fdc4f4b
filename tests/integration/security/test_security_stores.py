"""The kit's Mongo stores on the real MongoDB-wire server: API keys (issue, lookup, revoke, seed) and the
insert-only audit trail."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from motor.motor_asyncio import AsyncIOMotorClient, AsyncIOMotorDatabase

from fleet_shared.mongo import Document
from fleet_shared.security import (
    ApiKeys,
    AuditRecord,
    AuthenticationError,
    MongoApiKeyStore,
    MongoAuditLog,
    ProductScope,
    RoleTable,
    SecuritySettings,
    hash_key,
    security_kit,
)
from tests.support import Stack

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


@pytest.fixture
async def db(stack: Stack, unique: str) -> AsyncIterator[AsyncIOMotorDatabase[Document]]:
    client: AsyncIOMotorClient[Document] = AsyncIOMotorClient(stack.mongodb_uri, tz_aware=True)
    database = client[f"security_{unique}"]
    yield database
    await client.drop_database(database.name)
    client.close()


async def test_keys_are_issued_found_listed_revoked_and_stored_as_hashes(
    db: AsyncIOMotorDatabase[Document],
) -> None:
    store = MongoApiKeyStore(db)
    await store.ensure_indexes()
    now = NOW
    keys = ApiKeys(store, RoleTable(), lambda: now, ttl_s=0)
    key, plaintext = await keys.issue(
        "ci", ["operator"], ProductScope.only({"p1"}), expires_at=NOW + timedelta(days=1)
    )

    doc = await db["api_keys"].find_one({"_id": key.key_id})
    assert doc is not None
    assert doc["key_hash"] == hash_key(plaintext)
    assert plaintext not in repr(doc)
    assert doc["products"] == ["p1"]

    principal = await keys.authenticate(plaintext)
    assert principal.can("unbinding:execute", "p1")
    assert not principal.can("unbinding:execute", "p2")
    found = await store.find_by_hash(hash_key(plaintext))
    assert found is not None
    assert found.last_used_at == NOW
    assert found.expires_at == NOW + timedelta(days=1)
    assert [k.key_id for k in await keys.list()] == [key.key_id]

    assert await keys.revoke(key.key_id)
    first_revocation = (await db["api_keys"].find_one({"_id": key.key_id}) or {})["revoked_at"]
    now = NOW + timedelta(hours=1)
    assert await keys.revoke(key.key_id)  # revoking again keeps the first time
    assert (await db["api_keys"].find_one({"_id": key.key_id}) or {})["revoked_at"] == first_revocation
    with pytest.raises(AuthenticationError, match="revoked"):
        await keys.authenticate(plaintext)
    assert not await keys.revoke("no-such-key")


async def test_a_duplicate_hash_is_refused_by_the_index(db: AsyncIOMotorDatabase[Document]) -> None:
    store = MongoApiKeyStore(db)
    await store.ensure_indexes()
    keys = ApiKeys(store, RoleTable(), lambda: NOW)
    assert await keys.seed("a:the-same-key-material-for-two-names-000", "viewer") == 1
    assert await keys.seed("b:the-same-key-material-for-two-names-000", "viewer") == 0
    (only,) = await keys.list()
    assert only.name == "b"  # the environment renamed it
    assert only.seeded


async def test_the_kit_wired_from_settings_seeds_status_style_keys(
    db: AsyncIOMotorDatabase[Document],
) -> None:
    kit = security_kit(SecuritySettings(api_key_default_role="viewer"), db, clock=lambda: NOW)
    assert await kit.prepare("e2e:e2e-api-key,ops:an-operator-key:operator") == 2
    assert await kit.prepare("e2e:e2e-api-key,ops:an-operator-key:operator") == 0
    viewer = await kit.api_keys.authenticate("e2e-api-key")
    assert viewer.can("status:read")
    assert not viewer.can("unbinding:execute")
    assert (await kit.api_keys.authenticate("an-operator-key")).can("unbinding:execute", "p1")
    await kit.aclose()


def record(record_id: str, at: datetime, subject: str = "api-key:k1", status: int = 201) -> AuditRecord:
    return AuditRecord(
        record_id=record_id,
        at=at,
        subject=subject,
        subject_kind="api_key",
        display_name="ci",
        method="POST",
        route="/v1/products/{product_id}/unbindings",
        action="unbind_devices",
        targets={"product_id": "p1"},
        status=status,
        outcome="succeeded" if status < 400 else "refused",
        request_id=f"req-{record_id}",
        trace_id=None,
    )


async def test_audit_records_are_appended_once_and_read_newest_first(
    db: AsyncIOMotorDatabase[Document],
) -> None:
    audit = MongoAuditLog(db)
    await audit.ensure_indexes()
    first = record("r1", NOW)
    await audit.append(first)
    await audit.append(first)  # a retried append stores it once
    await audit.append(record("r2", NOW + timedelta(seconds=1), subject="anonymous", status=401))
    await audit.append(record("r3", NOW + timedelta(seconds=2)))

    assert await db["audit"].count_documents({}) == 3
    assert [r.record_id for r in await audit.recent()] == ["r3", "r2", "r1"]
    assert [r.record_id for r in await audit.recent(subject="api-key:k1")] == ["r3", "r1"]
    assert [r.record_id for r in await audit.recent(since=NOW + timedelta(seconds=1), limit=1)] == ["r3"]
    assert (await audit.recent(subject="api-key:k1"))[-1] == first

    # the port has no update or delete: a changed record with a used id does not replace the stored one
    await audit.append(record("r1", NOW, status=500))
    stored = await db["audit"].find_one({"_id": "r1"})
    assert stored is not None
    assert stored["result"]["status"] == 201


async def test_keys_stored_the_way_status_stored_them_are_adopted(db: AsyncIOMotorDatabase[Document]) -> None:
    for name, key in (("e2e", "e2e-api-key"), ("cli", "a-key-added-with-the-cli")):
        await db["api_keys"].insert_one({"_id": hash_key(key), "name": name, "created_at": NOW})
    kit = security_kit(SecuritySettings(api_key_default_role="viewer"), db, clock=lambda: NOW)
    assert await kit.prepare("e2e:e2e-api-key:operator") == 0  # already stored: adopted, then its roles set
    assert await kit.key_store.adopt_legacy("viewer") == 0
    operator = await kit.api_keys.authenticate("e2e-api-key")
    assert operator.can("unbinding:execute", "p1")
    cli = await kit.api_keys.authenticate("a-key-added-with-the-cli")
    assert cli.display_name == "cli"
    assert cli.can("status:read")
    assert not cli.can("unbinding:execute")
    with pytest.raises(AuthenticationError, match="unknown"):
        await kit.api_keys.authenticate("e2e-api-key-not")
    await kit.aclose()
