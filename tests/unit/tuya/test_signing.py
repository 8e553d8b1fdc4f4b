"""Signing vectors (REFERENCE §4), the server-side verifier, push sign and the Pulsar password."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from fleet_shared.tuya.signing import (
    EMPTY_BODY_SHA256,
    pulsar_auth_data,
    pulsar_password,
    push_sign,
    sign_request,
    string_to_sign,
    verify_push_sign,
    verify_request,
)

from .conftest import load_vectors

pytestmark = pytest.mark.unit

SIGNATURES = load_vectors()["openapi_signatures"]


def _body(vector: dict[str, Any]) -> bytes:
    return str(vector["body_json"]).encode()


@pytest.mark.parametrize("vector", SIGNATURES, ids=[f"{v['method']} {v['path']}" for v in SIGNATURES])
def test_openapi_signature_vectors(vector: dict[str, Any]) -> None:
    signed = sign_request(
        client_id=vector["client_id"],
        secret=vector["secret"],
        t=vector["t"],
        method=vector["method"],
        path=vector["path"],
        query=vector["query"],
        body=_body(vector),
        access_token=vector["access_token"],
        nonce=vector["nonce"],
    )
    assert signed.string_to_sign == vector["string_to_sign"]
    assert signed.sign == vector["sign"]
    headers = signed.headers()
    assert ("access_token" in headers) == bool(vector["access_token"])
    assert ("nonce" in headers) == bool(vector["nonce"])
    check = verify_request(
        method=vector["method"],
        path=vector["path"],
        query=vector["query"],
        headers=headers,
        body=_body(vector),
        secret=vector["secret"],
    )
    assert check.ok
    assert check.access_token == vector["access_token"]
    assert vector["access_token"] not in repr(check) or not vector["access_token"]
    assert vector["access_token"] not in repr(signed) or not vector["access_token"]


def test_verifier_rejects_tampering() -> None:
    v = SIGNATURES[2]
    signed = sign_request(
        client_id=v["client_id"], secret=v["secret"], t=v["t"], method="POST", path=v["path"],
        body=_body(v), access_token=v["access_token"],
    )  # fmt: skip
    headers = signed.headers()
    ok = {"method": "POST", "path": v["path"], "query": {}, "headers": headers, "body": _body(v)}
    assert verify_request(**ok, secret=v["secret"]).ok
    assert not verify_request(**{**ok, "body": _body(v) + b" "}, secret=v["secret"]).ok
    assert not verify_request(**{**ok, "path": v["path"] + "x"}, secret=v["secret"]).ok
    assert not verify_request(**{**ok, "query": {"a": 1}}, secret=v["secret"]).ok
    assert not verify_request(**ok, secret="0" * 32).ok
    assert not verify_request(**{**ok, "headers": {**headers, "t": str(v["t"] + 1)}}, secret=v["secret"]).ok
    missing = verify_request(**{**ok, "headers": {"client_id": "x"}}, secret=v["secret"])
    assert missing.problem == "missing_header"
    # header names are case-insensitive; the sign hex case too
    upper = {k.upper(): val for k, val in headers.items()}
    assert verify_request(**{**ok, "headers": upper}, secret=v["secret"]).ok


def test_query_sorted_and_bools() -> None:
    sts = string_to_sign("get", "/p", {"b": True, "a": "x,y", "c": None})
    assert sts == f"GET\n{EMPTY_BODY_SHA256}\n\n/p?a=x,y&b=true"


def test_signed_headers_are_joined_like_tcj() -> None:
    sts = string_to_sign("GET", "/p", None, b"", [("area_id", "1"), ("call_id", "2")])
    assert sts == f"GET\n{EMPTY_BODY_SHA256}\narea_id:1\ncall_id:2\n/p"


def test_push_sign_recipe() -> None:
    envelope = {"protocol": 4, "pv": "2.0", "t": 7, "data": "abc", "sign": "ignored", "empty": ""}
    expected = hashlib.md5(b"data=abc||protocol=4||pv=2.0||t=7||secret", usedforsecurity=False).hexdigest()
    assert push_sign(envelope, "secret") == expected
    assert verify_push_sign({**envelope, "sign": expected.upper()}, "secret")
    assert not verify_push_sign({**envelope, "sign": expected, "t": 8}, "secret")
    assert not verify_push_sign({"protocol": 4}, "secret")


def test_pulsar_password() -> None:
    access_id, secret = "xt9p4fx9y8r5b3c2a1d0", "4f1c9e0b7a6d5c3e2f1a0b9c8d7e6f5a"
    inner = hashlib.md5(secret.encode(), usedforsecurity=False).hexdigest()
    full = hashlib.md5((access_id + inner).encode(), usedforsecurity=False).hexdigest()
    assert pulsar_password(access_id, secret) == full[8:24]
    assert len(pulsar_password(access_id, secret)) == 16
    assert pulsar_auth_data(access_id, secret) == {"username": access_id, "password": full[8:24]}
