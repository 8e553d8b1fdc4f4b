"""API keys: issue/list/revoke, seeding from the environment, expiry, and the lookup cache's TTL."""

from __future__ import annotations

from datetime import timedelta

import pytest

from fleet_shared.security import ApiKeys, AuthenticationError, ProductScope, RoleTable, hash_key
from fleet_shared.security.api_keys import parse_seeded_keys
from tests.unit.security.fakes import FakeApiKeyStore, ManualClock

pytestmark = pytest.mark.unit


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def store() -> FakeApiKeyStore:
    return FakeApiKeyStore()


@pytest.fixture
def keys(store: FakeApiKeyStore, clock: ManualClock) -> ApiKeys:
    return ApiKeys(store, RoleTable(), clock, ttl_s=5.0)


async def test_an_issued_key_is_shown_once_and_stored_as_its_hash_only(
    keys: ApiKeys, store: FakeApiKeyStore
) -> None:
    key, plaintext = await keys.issue("ci", ["operator"], ProductScope.only({"p1"}))
    assert plaintext.startswith(f"fk_{key.key_id}_")
    stored, stored_hash = store.keys[key.key_id]
    assert stored_hash == hash_key(plaintext)
    assert plaintext not in repr(stored)
    listed = await keys.list()
    assert [k.key_id for k in listed] == [key.key_id]
    assert plaintext not in repr(listed)

    principal = await keys.authenticate(plaintext)
    assert principal.subject == f"api-key:{key.key_id}"
    assert principal.display_name == "ci"
    assert principal.kind == "api_key"
    assert principal.can("unbinding:execute", "p1")
    assert not principal.can("unbinding:execute", "p2")


async def test_issuing_refuses_bad_input(keys: ApiKeys, store: FakeApiKeyStore, clock: ManualClock) -> None:
    with pytest.raises(ValueError, match="unknown roles"):
        await keys.issue("ci", ["superuser"])
    with pytest.raises(ValueError, match="at least one role"):
        await keys.issue("ci", [])
    with pytest.raises(ValueError, match="past"):
        await keys.issue("ci", ["viewer"], expires_at=clock.now - timedelta(seconds=1))
    assert store.keys == {}


async def test_unknown_keys_are_refused(keys: ApiKeys) -> None:
    with pytest.raises(AuthenticationError, match="unknown"):
        await keys.authenticate("fk_0000_nothing")


async def test_an_expired_key_is_refused_even_from_the_cache(keys: ApiKeys, clock: ManualClock) -> None:
    key, plaintext = await keys.issue("temp", ["viewer"], expires_at=clock.now + timedelta(seconds=3))
    await keys.authenticate(plaintext)
    clock.advance(3)
    with pytest.raises(AuthenticationError, match=f"{key.key_id} expired"):
        await keys.authenticate(plaintext)


async def test_revocation_here_applies_at_once_and_from_elsewhere_within_the_ttl(
    store: FakeApiKeyStore, clock: ManualClock
) -> None:
    here = ApiKeys(store, RoleTable(), clock, ttl_s=5.0)
    elsewhere = ApiKeys(store, RoleTable(), clock, ttl_s=5.0)  # another process, same database
    key, plaintext = await here.issue("ci", ["viewer"])
    await here.authenticate(plaintext)
    await elsewhere.authenticate(plaintext)
    lookups = store.lookups
    await elsewhere.authenticate(plaintext)
    assert store.lookups == lookups  # served from the cache

    assert await here.revoke(key.key_id)
    with pytest.raises(AuthenticationError, match="revoked"):
        await here.authenticate(plaintext)
    await elsewhere.authenticate(plaintext)  # still cached there, within the documented TTL
    clock.advance(5)
    with pytest.raises(AuthenticationError, match="revoked"):
        await elsewhere.authenticate(plaintext)
    assert not await here.revoke("no-such-key")


async def test_last_use_is_recorded_once_per_cache_period(
    keys: ApiKeys, store: FakeApiKeyStore, clock: ManualClock
) -> None:
    key, plaintext = await keys.issue("ci", ["viewer"])
    for _ in range(3):
        await keys.authenticate(plaintext)
    clock.advance(6)
    await keys.authenticate(plaintext)
    assert store.touches == [key.key_id, key.key_id]


def test_the_seed_format_status_used_still_reads_and_roles_may_follow() -> None:
    parsed = parse_seeded_keys("e2e:e2e-api-key, bare-key ,ops:k2:operator+firmware,", "viewer")
    assert [(k.name, k.key, k.roles) for k in parsed] == [
        ("e2e", "e2e-api-key", ("viewer",)),
        ("key-2", "bare-key", ("viewer",)),
        ("ops", "k2", ("operator", "firmware")),
    ]


async def test_seeding_is_idempotent_follows_the_environment_and_never_unrevokes(
    keys: ApiKeys, store: FakeApiKeyStore
) -> None:
    assert await keys.seed("ops:seeded-key-with-enough-length-0001", "viewer") == 1
    assert await keys.seed("ops:seeded-key-with-enough-length-0001:operator", "viewer") == 0
    (key,) = await keys.list()
    assert key.seeded
    assert key.roles == ("operator",)
    assert (await keys.authenticate("seeded-key-with-enough-length-0001")).can("unbinding:execute")

    await keys.revoke(key.key_id)
    assert await keys.seed("ops:seeded-key-with-enough-length-0001:admin", "viewer") == 0
    with pytest.raises(AuthenticationError, match="revoked"):
        await keys.authenticate("seeded-key-with-enough-length-0001")
    assert (await keys.list())[0].roles == ("operator",)


async def test_seeding_refuses_unknown_roles(keys: ApiKeys, store: FakeApiKeyStore) -> None:
    with pytest.raises(ValueError, match="unknown roles"):
        await keys.seed("ops:k:opertor", "viewer")
    assert store.keys == {}
