"""OpenAPI client against a fake Tuya cloud at the HTTP seam: tokens, retries, error mapping, rate limiting,
typed results, redaction."""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Any

import httpx
import pytest

from fleet_shared.tuya import errors as e
from fleet_shared.tuya.models import DpType, EnumValues, IntegerValues, PairingResult
from fleet_shared.tuya.openapi import RetryPolicy, TuyaOpenApiClient, unwrap_response
from fleet_shared.tuya.pairing import PairingApi
from fleet_shared.tuya.ratelimit import RateLimit, RateLimiter

from .fake_tuya import ACCESS_ID, ACCESS_SECRET, FakeTuya, json_body

pytestmark = pytest.mark.unit

DEVICE = "6c070001a3b9f1e2d5"
LOCAL_KEY = "f1e2d3c4b5a69788"
PAIR_SECRET = "reKEsecretXYZ"


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def make_client(fake: FakeTuya, clock: FakeTime | None = None, **kwargs: Any) -> TuyaOpenApiClient:
    clock = clock or FakeTime()
    kwargs.setdefault("default_rate_limit", None)
    return TuyaOpenApiClient(
        ACCESS_ID,
        ACCESS_SECRET,
        base_url="https://tuya.test",
        http=fake.client(),
        monotonic=clock.monotonic,
        sleep=clock.sleep,
        rand=lambda: 0.5,
        **kwargs,
    )


def device_route(request: httpx.Request) -> dict[str, Any]:
    return {
        "id": DEVICE,
        "name": "Plug",
        "local_key": LOCAL_KEY,
        "online": True,
        "status": [{"code": "a", "value": 1}],
    }


async def test_get_device_signs_and_acquires_token_once() -> None:
    fake = FakeTuya(routes={("GET", f"/v1.0/devices/{DEVICE}"): device_route})
    client = make_client(fake)
    device = await client.get_device(DEVICE)
    await client.get_device(DEVICE)
    assert device.online is True
    assert device.local_key is not None
    assert device.local_key.get_secret_value() == LOCAL_KEY
    assert LOCAL_KEY not in repr(device)
    assert LOCAL_KEY not in device.model_dump_json()
    assert fake.counts["/v1.0/token"] == 1
    assert client.token_acquisitions == 1


async def test_concurrent_callers_acquire_one_token() -> None:
    fake = FakeTuya(routes={("GET", f"/v1.0/devices/{DEVICE}"): device_route})
    client = make_client(fake)
    await asyncio.gather(*(client.get_device(DEVICE) for _ in range(20)))
    assert fake.counts["/v1.0/token"] == 1


async def test_refresh_before_expiry_with_single_use_refresh_token() -> None:
    fake = FakeTuya(routes={("GET", f"/v1.0/devices/{DEVICE}"): device_route})
    clock = FakeTime()
    client = make_client(fake, clock, refresh_margin=60)
    await client.get_device(DEVICE)
    first = fake.issued[0]
    clock.now += 7200 - 59  # inside the refresh margin
    await asyncio.gather(*(client.get_device(DEVICE) for _ in range(5)))
    assert client.token_refreshes == 1
    assert fake.counts[f"/v1.0/token/{first['refresh_token']}"] == 1
    assert first["refresh_token"] not in fake.refresh_tokens
    assert fake.counts["/v1.0/token"] == 1


async def test_failed_refresh_falls_back_to_acquire() -> None:
    fake = FakeTuya(routes={("GET", f"/v1.0/devices/{DEVICE}"): device_route})
    clock = FakeTime()
    client = make_client(fake, clock)
    await client.get_device(DEVICE)
    fake.refresh_tokens.clear()  # Tuya forgot the refresh token
    clock.now += 7200
    await client.get_device(DEVICE)
    assert fake.counts["/v1.0/token"] == 2
    assert client.token_acquisitions == 2


@pytest.mark.parametrize("code", [1010, 1011])
async def test_token_rejected_reacquires_and_retries_once(code: int) -> None:
    fake = FakeTuya(routes={("POST", "/v1.0/device/paring/token"): lambda r: _pairing_token()})
    client = make_client(fake)
    await client.access_token()
    fake.script["/v1.0/device/paring/token"] = [code]
    token = await PairingApi(client).create_token(uid="u1", time_zone_id="Europe/Berlin")
    assert token.token == "nqMwn1Nd"
    assert fake.counts["/v1.0/token"] == 2
    assert fake.counts["/v1.0/device/paring/token"] == 2
    fake.script["/v1.0/device/paring/token"] = [code, code]
    with pytest.raises(e.TuyaTokenError):
        await PairingApi(client).create_token(uid="u1", time_zone_id="Europe/Berlin")


ERROR_CASES = [
    (500, e.TuyaSystemError),
    (1000, e.TuyaDataNotFoundError),
    (1001, e.TuyaAuthError),
    (1004, e.TuyaSignatureError),
    (1010, e.TuyaTokenExpiredError),
    (1011, e.TuyaTokenInvalidError),
    (1012, e.TuyaTokenError),
    (1013, e.TuyaClockSkewError),
    (1106, e.TuyaPermissionError),
    (28841105, e.TuyaPermissionError),
    (1109, e.TuyaParamError),
    (1110, e.TuyaRateLimitError),
    (1199, e.TuyaRateLimitError),
    (1111, e.TuyaBusyError),
    (2001, e.TuyaDeviceOfflineError),
    (2008, e.TuyaNotSupportedError),
    (2010, e.TuyaDeviceNotFoundError),
    (4242, e.TuyaApiError),
]


@pytest.mark.parametrize(("code", "cls"), ERROR_CASES)
def test_error_mapping(code: int, cls: type[e.TuyaApiError]) -> None:
    with pytest.raises(cls) as info:
        unwrap_response({"success": False, "code": code, "msg": "m", "tid": "t1"})
    assert type(info.value) is cls
    assert (info.value.code, info.value.msg, info.value.tid) == (code, "m", "t1")
    assert info.value.retryable == (code in {1110, 1111, 1199})


def test_fusion_result_both_shapes() -> None:
    assert unwrap_response({"success": True, "result": {"success": True, "result": [1]}}) == [1]
    with pytest.raises(e.TuyaDeviceOfflineError):
        unwrap_response(
            {"success": True, "result": {"success": False, "error_code": "2001", "error_msg": "x"}}
        )
    with pytest.raises(e.TuyaDeviceNotFoundError):
        unwrap_response({"success": False, "error_code": 2010, "error_msg": "x"})
    # a pairing result has a `success` list, not a FusionResult
    assert unwrap_response({"success": True, "result": {"success": [], "failed": []}}) == {
        "success": [],
        "failed": [],
    }


@pytest.mark.parametrize("failure", [1110, 1111, 1199, ("http", 503)])
async def test_idempotent_calls_retry_with_backoff(failure: Any) -> None:
    path = f"/v1.0/devices/{DEVICE}"
    fake = FakeTuya(routes={("GET", path): device_route}, script={path: [failure, failure]})
    clock = FakeTime()
    client = make_client(fake, clock, retry=RetryPolicy(max_attempts=4, base_delay=1.0, max_delay=8.0))
    await client.get_device(DEVICE)
    assert fake.counts[path] == 3
    assert clock.sleeps == [0.5, 1.0]  # full jitter with rand=0.5: 0.5 * 1, 0.5 * 2


async def test_retries_give_up_after_max_attempts() -> None:
    path = f"/v1.0/devices/{DEVICE}"
    fake = FakeTuya(routes={("GET", path): device_route}, script={path: [1111] * 10})
    client = make_client(fake, retry=RetryPolicy(max_attempts=3))
    with pytest.raises(e.TuyaBusyError):
        await client.get_device(DEVICE)
    assert fake.counts[path] == 3


@pytest.mark.parametrize("failure", [1110, 1199, ("http", 502)])
async def test_non_idempotent_calls_are_not_retried(failure: Any) -> None:
    path = f"/v2.0/cloud/thing/{DEVICE}/firmware/0"
    fake = FakeTuya(routes={("POST", path): lambda r: True}, script={path: [failure]})
    client = make_client(fake)
    with pytest.raises((e.TuyaRateLimitError, e.TuyaTransportError)):
        await client.confirm_upgrade(DEVICE, 0)
    assert fake.counts[path] == 1
    assert await client.confirm_upgrade(DEVICE, 0) is True


async def test_explicitly_idempotent_post_is_retried() -> None:
    fake = FakeTuya(routes={("POST", "/v1.0/things/x"): lambda r: True}, script={"/v1.0/things/x": [1111]})
    client = make_client(fake)
    assert await client.request("POST", "/v1.0/things/x", body={}, idempotent=True) is True
    assert fake.counts["/v1.0/things/x"] == 2


async def test_non_retryable_error_raised_at_once() -> None:
    path = f"/v1.0/devices/{DEVICE}"
    fake = FakeTuya(routes={("GET", path): device_route}, script={path: [2001]})
    client = make_client(fake)
    with pytest.raises(e.TuyaDeviceOfflineError):
        await client.get_device(DEVICE)
    assert fake.counts[path] == 1


async def test_clock_skew_adjusts_offset_and_retries_once() -> None:
    path = f"/v1.0/devices/{DEVICE}"
    fake = FakeTuya(routes={("GET", path): device_route})
    client = make_client(fake, clock=None)
    await client.access_token()
    fake.script[path] = [1013]
    await client.get_device(DEVICE)
    assert fake.counts[path] == 2


async def test_token_bucket_paces_calls() -> None:
    clock = FakeTime()
    limits = {"GET /v1.0/devices/{device_id}": RateLimit(rate=2, burst=2)}
    limiter = RateLimiter(limits, clock=clock.monotonic, sleep=clock.sleep)
    start = clock.now
    for _ in range(6):
        await limiter.acquire("GET", "/v1.0/devices/{device_id}")
    assert clock.now - start == pytest.approx(2.0)  # 2 free, then 4 at 2/s
    # other APIs have their own bucket (none configured, no default: unlimited)
    assert await limiter.acquire("GET", "/v1.0/other") == 0.0


async def test_client_applies_rate_limit_per_api() -> None:
    path = f"/v1.0/devices/{DEVICE}"
    fake = FakeTuya(routes={("GET", path): device_route})
    clock = FakeTime()
    client = make_client(
        fake, clock, rate_limits={"GET /v1.0/devices/{device_id}": RateLimit(rate=1, burst=1)}
    )
    for _ in range(3):
        await client.get_device(DEVICE)
    assert sum(clock.sleeps) == pytest.approx(2.0)


def _pairing_token() -> dict[str, Any]:
    return {"region": "AY", "token": "nqMwn1Nd", "secret": PAIR_SECRET, "expire_time": 600}


async def test_pairing_token_and_results() -> None:
    seen: list[Any] = []

    def create(request: httpx.Request) -> dict[str, Any]:
        seen.append(json_body(request))
        return _pairing_token()

    fake = FakeTuya(
        routes={
            ("POST", "/v1.0/device/paring/token"): create,
            ("GET", "/v1.0/device/paring/tokens/nqMwn1Nd"): lambda r: {
                "success": [{"device_id": "d1", "product_id": "p", "category": "cz", "name": "n"}],
                "failed": [{"device_id": "d2", "name": "n2", "code": 2001, "msg": "offline"}],
            },
        }
    )
    client = make_client(fake)
    token = await PairingApi(client).create_token(uid="u1", time_zone_id="Europe/Berlin", home_id="41027731")
    assert seen == [
        {"paring_type": "EZ", "uid": "u1", "time_zone_id": "Europe/Berlin", "home_id": "41027731"}
    ]
    assert token.assembled_token() == "AYnqMwn1Nd" + PAIR_SECRET
    assert PAIR_SECRET not in repr(token)
    assert PAIR_SECRET not in str(token.model_dump(mode="json"))
    result = await PairingApi(client).token_result("nqMwn1Nd")
    assert [d.device_id for d in result.success] == ["d1"]
    assert result.failed[0].code == "2001"


async def test_pairing_slice_retries_the_result_never_the_token_creation() -> None:
    """A token request Tuya may have run is not repeated (a second token would be issued); the result
    read is, on 1110 (too frequent) and HTTP 5xx; the slice paces through the client's buckets."""
    fake = FakeTuya(
        routes={
            ("POST", "/v1.0/device/paring/token"): lambda r: _pairing_token(),
            ("GET", "/v1.0/device/paring/tokens/nqMwn1Nd"): lambda r: {"success": [], "failed": []},
        }
    )
    clock = FakeTime()
    client = make_client(fake, clock, default_rate_limit=RateLimit(rate=2.0, burst=1.0))
    pairing = PairingApi(client)
    fake.script["/v1.0/device/paring/token"] = [1110]
    with pytest.raises(e.TuyaApiError) as refused:
        await pairing.create_token(uid="u1", time_zone_id="UTC")
    assert refused.value.code == 1110
    assert fake.counts["/v1.0/device/paring/token"] == 1
    fake.script["/v1.0/device/paring/tokens/nqMwn1Nd"] = [1110, ("http", 503)]
    result = await pairing.token_result("nqMwn1Nd")
    assert result == PairingResult()
    assert fake.counts["/v1.0/device/paring/tokens/nqMwn1Nd"] == 3
    # two tokens in a row: the second waits for the token API's bucket (2/s, burst 1), half a second
    slept = sum(clock.sleeps)
    await pairing.create_token(uid="u1", time_zone_id="UTC")
    await pairing.create_token(uid="u1", time_zone_id="UTC")
    assert sum(clock.sleeps) - slept == pytest.approx(0.5)
    with pytest.raises(ValueError, match="invalid value for path parameter 'token'"):
        await pairing.token_result("../devices/x")


@pytest.mark.parametrize(
    "shape",
    [
        {
            "success_devices": [{"id": "d1", "product_id": "p"}],
            "error_devices": [{"id": "d2", "error_code": "2001"}],
        },
        {
            "successDevices": [{"id": "d1", "productId": "p"}],
            "errorDevices": [{"id": "d2", "errorCode": "2001"}],
        },
    ],
)
def test_pairing_result_other_shapes(shape: dict[str, Any]) -> None:
    result = PairingResult.model_validate(shape)
    assert result.success[0].device_id == "d1"
    assert result.success[0].product_id == "p"
    assert result.failed[0].device_id == "d2"
    assert result.failed[0].code == "2001"


async def test_specifications_parse_values() -> None:
    spec = {
        "category": "cz",
        "functions": [
            {"code": "switch_1", "type": "Boolean", "values": "{}"},
            {"code": "mode", "type": "enum", "values": '{"range":["auto","manual"]}'},
        ],
        "status": [
            {"code": "cur_power", "dp_id": 19, "type": "value",
             "values": '{"unit":"W","min":0,"max":50000,"scale":1,"step":1}'},
            {"code": "fault", "type": "Bitmap", "values": '{"label":["ov","uv"],"maxlen":2}'},
            {"code": "cfg", "type": "Json", "values": "not json"},
            {"code": "weird", "type": "Quantum", "values": "{}"},
        ],
    }  # fmt: skip
    fake = FakeTuya(routes={("GET", f"/v1.0/devices/{DEVICE}/specifications"): lambda r: spec})
    result = await make_client(fake).get_specifications(DEVICE)
    assert result.functions[0].type is DpType.BOOLEAN
    assert isinstance(result.functions[1].values, EnumValues)
    assert result.functions[1].values.range == [
        "auto",
        "manual",
    ]
    power = result.status[0]
    assert isinstance(power.values, IntegerValues)
    assert power.dp_id == 19
    assert power.values.to_real(1234) == pytest.approx(123.4)
    assert result.status[1].type is DpType.BITMAP
    assert result.status[2].type is DpType.JSON
    assert result.status[3].type is None
    assert result.status[3].type_raw == "Quantum"


async def test_firmware_progress_remove_reset_batch_logs() -> None:
    things = [{"id": DEVICE, "is_online": True, "local_key": LOCAL_KEY}, {"id": "d2", "is_online": False}]
    fake = FakeTuya(
        routes={
            ("GET", f"/v2.0/cloud/thing/{DEVICE}/firmware"): lambda r: [
                {"type": 0, "upgrade_status": 1, "current_version": "1.0.0", "version": "1.1.0"},
                {"channel": 9, "upgrade_status": 0},
            ],
            ("GET", f"/v2.0/cloud/thing/{DEVICE}/firmware/9/progress"): lambda r: {
                "progress": 40,
                "upgrade_status": 2,
            },
            ("DELETE", f"/v2.0/cloud/thing/{DEVICE}"): lambda r: True,
            ("POST", f"/v2.0/cloud/thing/{DEVICE}/reset"): lambda r: True,
            ("GET", "/v2.0/cloud/thing/batch"): lambda r: things,
            ("GET", f"/v2.0/cloud/thing/{DEVICE}"): lambda r: things[0],
            ("GET", "/v1.0/iot-03/devices/status"): lambda r: [
                {"id": DEVICE, "status": [{"code": "a", "value": 1}]}
            ],
            ("GET", f"/v1.0/devices/{DEVICE}/logs"): lambda r: {
                "logs": [{"code": "a", "value": "1", "event_time": 5, "event_id": 7}],
                "has_next": True,
                "next_row_key": "k",
                "device_id": DEVICE,
            },
        }
    )
    client = make_client(fake)
    firmware = await client.get_firmware(DEVICE)
    assert [f.channel for f in firmware] == [0, 9]
    progress = await client.get_upgrade_progress(DEVICE, 9)
    assert (progress.progress, progress.upgrade_status) == (40, 2)
    assert await client.remove_device(DEVICE) is True
    assert await client.factory_reset_device(DEVICE) is True
    batch = await client.get_things([DEVICE, "d2"])
    assert [t.online for t in batch] == [True, False]
    assert (await client.get_thing(DEVICE)).is_online is True
    statuses = await client.get_devices_status([DEVICE])
    assert statuses[0].status[0].code == "a"
    logs = await client.get_device_logs(DEVICE, types=[1, 2], start_time=1, end_time=2)
    assert logs.has_next
    assert logs.next_row_key == "k"
    assert logs.logs[0].event_id == 7
    with pytest.raises(ValueError, match="20"):
        await client.get_things([f"d{i}" for i in range(21)])


@pytest.mark.parametrize("bad", ["../x", "a/b", "a?b", "a#b", "", "a%2F"])
async def test_path_params_are_validated(bad: str) -> None:
    client = make_client(FakeTuya())
    with pytest.raises(ValueError, match="path parameter"):
        await client.get_device(bad)


async def test_no_secret_in_logs_reprs_or_errors(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="fleet_shared.tuya")
    path = f"/v1.0/devices/{DEVICE}"

    def boom(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot reach {request.url}")

    fake = FakeTuya(
        routes={
            ("GET", path): device_route,
            ("POST", "/v1.0/device/paring/token"): lambda r: _pairing_token(),
        }
    )
    clock = FakeTime()
    client = make_client(fake, clock, retry=RetryPolicy(max_attempts=2))
    texts: list[str] = [repr(client)]
    await client.get_device(DEVICE)
    token = await PairingApi(client).create_token(uid="u", time_zone_id="UTC")
    texts += [repr(token), str(token), repr(client._token)]
    # Tuya echoes the access token in an error message: redacted
    fake.script[path] = [2001]
    with pytest.raises(e.TuyaDeviceOfflineError) as offline:
        await client.get_device(DEVICE)
    texts += [str(offline.value), repr(offline.value)]
    # a network error whose text names the refresh URL: not leaked
    clock.now += 7200
    fake.routes = {}
    client._http = httpx.AsyncClient(transport=httpx.MockTransport(boom))
    with pytest.raises(e.TuyaTransportError) as transport:
        await client.get_device(DEVICE)
    texts += [str(transport.value), repr(transport.value)]
    texts.append(caplog.text)
    everything = "\n".join(texts)
    secrets = [ACCESS_SECRET, ACCESS_SECRET[8:24], LOCAL_KEY, PAIR_SECRET]
    for issued in fake.issued:
        secrets += [issued["access_token"], issued["refresh_token"]]
    for secret in secrets:
        assert secret not in everything, secret
    assert "***" in str(offline.value)


async def test_token_bucket_makes_up_an_overrunning_sleep_without_bursting() -> None:
    """A busy event loop wakes a waiter late: the next call waits that much less, so a queue keeps the rate;
    after a long stall the queue does not leave at once."""
    clock = FakeTime()
    late = {"by": 0.05}

    async def oversleep(seconds: float) -> None:
        clock.sleeps.append(seconds)
        clock.now += seconds + late["by"]

    limiter = RateLimiter(default=RateLimit(rate=5, burst=1), clock=clock.monotonic, sleep=oversleep)
    start = clock.now
    sent: list[float] = []
    for _ in range(11):
        await limiter.acquire("POST", "/v1.0/device/paring/token")
        sent.append(clock.now - start)
    # every wake-up 50 ms late, yet ten intervals of 200 ms take 2 s (+ the last overrun), not 2.5 s
    assert sent[-1] == pytest.approx(2.0 + 0.05)
    assert all(b - a >= 0.15 - 1e-9 for a, b in itertools.pairwise(sent))
    # a stall: one wake-up comes 2 s late; the next call goes out with it, not the ten it missed
    late["by"] = 2.0
    await limiter.acquire("POST", "/v1.0/device/paring/token")
    late["by"] = 0.0
    woke = clock.now
    await limiter.acquire("POST", "/v1.0/device/paring/token")
    assert clock.now == woke
    await limiter.acquire("POST", "/v1.0/device/paring/token")
    assert clock.now - woke == pytest.approx(0.2)
