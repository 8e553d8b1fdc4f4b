"""Assembled token, BLE token, Wi-Fi credentials and the camera QR payload (the JSON a firmware parses)."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from fleet_pairing.domain.credentials import (
    InvalidCredentials,
    IssuedToken,
    WifiCredentials,
    ble_token,
    qr_payload,
)
from fleet_shared.qr import render, terminal_text

pytestmark = pytest.mark.unit

PASSWORD = "hunter2-correct-horse"


def token() -> SecretStr:
    return IssuedToken("AY", "nqMwn1Nd", SecretStr("reKE")).assembled()


def test_the_token_is_assembled_as_tuyas_sdks_do() -> None:
    assert token().get_secret_value() == "AYnqMwn1NdreKE"  # REFERENCE §5's example


def test_an_issued_token_never_shows_its_secret() -> None:
    issued = IssuedToken("AY", "nqMwn1Nd", SecretStr("reKE"))
    assert "reKE" not in repr(issued)
    assert "reKE" not in str(issued.assembled())
    assert "reKE" not in repr(issued.assembled())


@pytest.mark.parametrize(("region", "bare"), [("", "nqMwn1Nd"), ("AY", "")])
def test_an_empty_region_or_token_is_refused(region: str, bare: str) -> None:
    with pytest.raises(InvalidCredentials, match="token"):
        IssuedToken(region, bare, SecretStr("reKE")).assembled()


def test_the_ble_token_is_the_eight_characters_after_the_region() -> None:
    # Tuya's SDK: [token substringWithRange:NSMakeRange(2, 8)]
    assert ble_token(token()).get_secret_value() == "nqMwn1Nd"
    assert len(ble_token(SecretStr("EU12345678")).get_secret_value()) == 8


def test_a_token_too_short_for_ble_is_refused_without_echoing_it() -> None:
    with pytest.raises(InvalidCredentials) as info:
        ble_token(SecretStr("AYshort1"))
    assert "AYshort1" not in str(info.value)
    assert info.value.field == "token"


def test_the_payload_is_compact_json_in_s_p_t_order() -> None:
    payload = qr_payload(WifiCredentials("home", SecretStr("password1")), token())
    assert payload.get_secret_value() == '{"s":"home","p":"password1","t":"AYnqMwn1NdreKE"}'


def test_quotes_backslashes_and_unicode_are_escaped_as_json_requires() -> None:
    wifi = WifiCredentials('Café "Wi\\Fi" 📶', SecretStr('pa"ss\\wörd'))
    text = qr_payload(wifi, token()).get_secret_value()
    assert text == '{"s":"Café \\"Wi\\\\Fi\\" 📶","p":"pa\\"ss\\\\wörd","t":"AYnqMwn1NdreKE"}'
    # what a device firmware's JSON parser (any strict one) reads back
    assert json.loads(text) == {"s": 'Café "Wi\\Fi" 📶', "p": 'pa"ss\\wörd', "t": "AYnqMwn1NdreKE"}


def _fits(limit: int, minimum: int = 1) -> st.SearchStrategy[str]:
    return st.text(
        st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1
    ).filter(lambda s: minimum <= len(s.encode()) <= limit)


@given(ssid=_fits(32), password=_fits(64, 8))
def test_any_valid_ssid_and_password_round_trip(ssid: str, password: str) -> None:
    text = qr_payload(WifiCredentials(ssid, SecretStr(password)), token()).get_secret_value()
    assert list(json.loads(text)) == ["s", "p", "t"]
    assert orjson.loads(text.encode()) == {"s": ssid, "p": password, "t": "AYnqMwn1NdreKE"}


def test_an_open_network_has_an_empty_password() -> None:
    text = qr_payload(WifiCredentials("guest", SecretStr("")), token()).get_secret_value()
    assert json.loads(text)["p"] == ""


@pytest.mark.parametrize(
    ("ssid", "password", "field"),
    [
        ("", "password1", "ssid"),
        ("x" * 33, "password1", "ssid"),
        ("é" * 17, "password1", "ssid"),  # 34 bytes of UTF-8
        ("nul\x00", "password1", "ssid"),
        ("home", "short", "password"),
        ("home", "p" * 65, "password"),
        ("home", "pass\x00word", "password"),
        ("home", "pass\ud800word", "password"),
    ],
)
def test_bad_credentials_are_refused_naming_the_field_never_the_value(
    ssid: str, password: str, field: str
) -> None:
    with pytest.raises(InvalidCredentials) as info:
        WifiCredentials(ssid, SecretStr(password))
    assert info.value.field == field
    if password and field == "password":
        assert password not in str(info.value)


def test_the_boundaries_are_accepted() -> None:
    WifiCredentials("x" * 32, SecretStr("p" * 64))
    WifiCredentials("x", SecretStr("p" * 8))


def test_wifi_credentials_never_show_the_password() -> None:
    wifi = WifiCredentials("home", SecretStr(PASSWORD))
    assert PASSWORD not in repr(wifi)
    assert PASSWORD not in str(wifi)
    assert PASSWORD not in repr(qr_payload(wifi, token()))


def test_the_qr_images_encode_the_payload() -> None:
    payload = qr_payload(WifiCredentials('Café "x"', SecretStr(PASSWORD)), token())
    images = render(payload)
    assert images.svg.startswith("<svg")
    assert images.png.startswith(b"\x89PNG\r\n\x1a\n")
    assert PASSWORD not in repr(images)
    assert PASSWORD not in images.svg  # the payload is in the modules, not in the markup
    assert terminal_text(payload).count("\n") > 10
