"""JWT bearer verification against a test issuer whose JWKS the test serves itself."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import pytest

from fleet_shared.security import AuthenticationError, Jwks, JwtVerifier, RoleTable, SecuritySettings
from tests.unit.security.issuer import AUDIENCE, LocalIssuer, served

pytestmark = pytest.mark.unit


class Monotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def issuer() -> LocalIssuer:
    issuer = LocalIssuer()
    issuer.add_key("rsa-1")
    issuer.add_key("ec-1", "EC")
    issuer.add_key("other", publish=False)  # a key the issuer never published: a forger's key
    return issuer


@pytest.fixture
async def http(issuer: LocalIssuer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=issuer.transport()) as client:
        yield client


def verifier_for(
    issuer: LocalIssuer, http: httpx.AsyncClient, clock: Monotonic | None = None, **options: float
) -> JwtVerifier:
    jwks = Jwks(
        http,
        issuer=issuer.url,
        ttl_s=options.get("ttl_s", 300.0),
        min_refetch_s=options.get("min_refetch_s", 30.0),
        monotonic=clock or Monotonic(),
    )
    return JwtVerifier(
        jwks,
        RoleTable(),
        issuer=issuer.url,
        audience=AUDIENCE,
        algorithms=["RS256", "ES256"],
        clock_skew_s=30,
    )


async def test_a_valid_token_gives_a_principal_from_its_claims(
    issuer: LocalIssuer, http: httpx.AsyncClient
) -> None:
    verifier = verifier_for(issuer, http)
    token = issuer.token(
        "rsa-1", roles=["operator", "some-idp-role"], scope="openid ota:read", fleet_products=["p1"]
    )
    principal = await verifier.verify(token)
    assert principal.subject == "jwt:user-1"
    assert principal.kind == "jwt"
    assert principal.roles == frozenset({"operator"})
    assert principal.can("unbinding:execute", "p1")
    assert not principal.can("unbinding:execute", "p2")
    assert principal.can("ota:read", "p1")  # from the scope claim
    ec_principal = await verifier.verify(issuer.token("ec-1", roles="viewer", fleet_products="*"))
    assert ec_principal.can("status:read", "any")


async def test_a_token_naming_no_products_reaches_none(issuer: LocalIssuer, http: httpx.AsyncClient) -> None:
    principal = await verifier_for(issuer, http).verify(issuer.token("rsa-1", roles=["viewer"]))
    assert not principal.can("status:read", "p1")


# Times are offsets from the moment the test runs (not from collection: a long suite would age them).
@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"exp": -120}, "ExpiredSignatureError"),
        ({"nbf": +120}, "ImmatureSignatureError"),
        ({"iat": +120}, "ImmatureSignatureError"),
        ({"aud": "another-api"}, "InvalidAudienceError"),
        ({"iss": "https://evil.test"}, "InvalidIssuerError"),
        ({"exp": None}, "MissingRequiredClaimError"),
        ({"sub": None}, "MissingRequiredClaimError"),
    ],
)
async def test_bad_claims_are_refused(
    issuer: LocalIssuer, http: httpx.AsyncClient, claims: dict[str, Any], reason: str
) -> None:
    now = int(time.time())
    timed = {k: now + v if k in ("exp", "nbf", "iat") and v is not None else v for k, v in claims.items()}
    with pytest.raises(AuthenticationError, match=reason):
        await verifier_for(issuer, http).verify(issuer.token("rsa-1", **timed))


async def test_clock_skew_is_tolerated(issuer: LocalIssuer, http: httpx.AsyncClient) -> None:
    token = issuer.token("rsa-1", exp=int(time.time()) - 10, nbf=int(time.time()) + 10)
    assert (await verifier_for(issuer, http).verify(token)).subject == "jwt:user-1"


async def test_a_signature_by_another_key_is_refused(issuer: LocalIssuer, http: httpx.AsyncClient) -> None:
    forged = issuer.token("other", headers={"kid": "rsa-1"})
    with pytest.raises(AuthenticationError, match="InvalidSignatureError"):
        await verifier_for(issuer, http).verify(forged)
    header, payload, _ = issuer.token("rsa-1").split(".")
    _, _, other_signature = issuer.token("other", headers={"kid": "rsa-1"}, sub="admin").split(".")
    with pytest.raises(AuthenticationError, match="InvalidSignatureError"):
        await verifier_for(issuer, http).verify(f"{header}.{payload}.{other_signature}")


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def test_alg_none_hs256_and_mismatched_algorithms_are_refused(
    issuer: LocalIssuer, http: httpx.AsyncClient
) -> None:
    verifier = verifier_for(issuer, http)
    claims = {"iss": issuer.url, "aud": AUDIENCE, "sub": "x", "iat": int(time.time()), "exp": 2**31}
    unsigned = f"{_b64({'alg': 'none', 'kid': 'rsa-1'})}.{_b64(claims)}."
    with pytest.raises(AuthenticationError, match="'none' is not allowed"):
        await verifier.verify(unsigned)
    # HS256 keyed with the issuer's public key: the classic algorithm-confusion forgery
    public_jwk = json.dumps(issuer.jwks()["keys"][0])
    hs = jwt.encode(claims, public_jwk.encode() * 2, algorithm="HS256", headers={"kid": "rsa-1"})
    with pytest.raises(AuthenticationError, match="'HS256' is not allowed"):
        await verifier.verify(hs)
    es_header_on_rsa_key = issuer.token("ec-1", headers={"kid": "rsa-1"})
    with pytest.raises(AuthenticationError, match="does not fit key"):
        await verifier.verify(es_header_on_rsa_key)
    with pytest.raises(AuthenticationError, match="malformed"):
        await verifier.verify("eyJnot.a.jwt")


def test_settings_refuse_symmetric_and_none_algorithms() -> None:
    with pytest.raises(ValueError, match="oidc_algorithms"):
        SecuritySettings(oidc_algorithms=["RS256", "HS256"])
    with pytest.raises(ValueError, match="oidc_algorithms"):
        SecuritySettings(oidc_algorithms=["none"])


async def test_a_rotated_key_is_accepted_after_one_refetch_and_refetches_are_rate_limited() -> None:
    issuer = LocalIssuer()
    issuer.add_key("old")
    issuer.add_key("new", publish=False)
    clock = Monotonic()
    async with httpx.AsyncClient(transport=issuer.transport()) as http:
        verifier = verifier_for(issuer, http, clock, min_refetch_s=30.0)
        await verifier.verify(issuer.token("old"))
        jwks_fetches = issuer.requests.count("/jwks.json")
        assert jwks_fetches == 1
        assert issuer.requests[0] == "/.well-known/openid-configuration"

        clock.now += 31
        issuer.published.append("new")  # the issuer rotates
        assert (await verifier.verify(issuer.token("new"))).subject == "jwt:user-1"
        assert issuer.requests.count("/jwks.json") == 2
        await verifier.verify(issuer.token("new"))
        assert issuer.requests.count("/jwks.json") == 2  # known now: no fetch

        for _ in range(5):  # made-up kids: at most one refetch per interval
            with pytest.raises(AuthenticationError, match="not in the issuer's JWKS"):
                await verifier.verify(issuer.token("old", headers={"kid": "made-up"}))
        assert issuer.requests.count("/jwks.json") == 2  # the last fetch was under 30 s ago
        clock.now += 31
        with pytest.raises(AuthenticationError, match="not in the issuer's JWKS"):
            await verifier.verify(issuer.token("old", headers={"kid": "made-up"}))
        assert issuer.requests.count("/jwks.json") == 3


async def test_the_jwks_is_cached_for_its_ttl_and_kept_when_a_refetch_fails() -> None:
    issuer = LocalIssuer()
    issuer.add_key("k")
    clock = Monotonic()
    healthy = True

    def handle(request: httpx.Request) -> httpx.Response:
        if not healthy:
            return httpx.Response(503)
        status, body = issuer.answer(request.url.path)
        return httpx.Response(status, json=body)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as http:
        verifier = verifier_for(issuer, http, clock, ttl_s=60.0)
        await verifier.verify(issuer.token("k"))
        clock.now += 59
        await verifier.verify(issuer.token("k"))
        assert issuer.requests.count("/jwks.json") == 1
        clock.now += 2
        healthy = False
        await verifier.verify(issuer.token("k"))  # stale keys serve while the issuer is down


async def test_an_unreachable_issuer_refuses_tokens_without_a_fetch_per_request() -> None:
    issuer = LocalIssuer()
    issuer.add_key("k")
    calls: list[str] = []

    def down(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        return httpx.Response(500)

    clock = Monotonic()
    async with httpx.AsyncClient(transport=httpx.MockTransport(down)) as http:
        verifier = verifier_for(issuer, http, clock, min_refetch_s=30.0)
        for _ in range(3):
            with pytest.raises(AuthenticationError, match="could not be fetched"):
                await verifier.verify(issuer.token("k"))
        assert len(calls) == 1
        clock.now += 30
        with pytest.raises(AuthenticationError, match="could not be fetched"):
            await verifier.verify(issuer.token("k"))
        assert len(calls) == 2


async def test_discovery_and_jwks_over_a_real_local_http_server() -> None:
    issuer = LocalIssuer()
    issuer.add_key("k", "EC")
    with served(issuer):
        settings = SecuritySettings(oidc_issuer=issuer.url, oidc_audience=AUDIENCE)
        async with httpx.AsyncClient(timeout=5) as http:
            verifier = JwtVerifier.from_settings(settings, RoleTable(), http)
            principal = await verifier.verify(issuer.token("k", roles=["firmware"], fleet_products=["p9"]))
    assert principal.can("ota:release", "p9")
    assert issuer.requests == ["/.well-known/openid-configuration", "/jwks.json"]
