"""Tuya edge: push-message codec, signatures and the async OpenAPI client (REFERENCE.md §1-7).

codec = PushCodec(access_secret)                       # decode what ingest consumes
decoded = codec.decode(pulsar_payload, pulsar_properties)
async with TuyaOpenApiClient(access_id, access_secret, region_code="eu") as client:
    device = await client.get_device(device_id)
"""

from fleet_shared.tuya.codec import (
    DecodedMessage,
    EncodedMessage,
    EncryptionMode,
    PushCodec,
    decode,
    encode,
    encrypt_ecb,
    encrypt_gcm,
)
from fleet_shared.tuya.errors import (
    PushMessageRejected,
    RejectReason,
    TuyaApiError,
    TuyaError,
    TuyaResponseError,
    TuyaTransportError,
    api_error,
)
from fleet_shared.tuya.messages import TuyaMessage, parse_message
from fleet_shared.tuya.openapi import RetryPolicy, TuyaOpenApiClient, unwrap_response
from fleet_shared.tuya.ratelimit import RateLimit
from fleet_shared.tuya.regions import REGIONS, Region, region
from fleet_shared.tuya.signing import (
    pulsar_password,
    push_sign,
    sign_request,
    verify_push_sign,
    verify_request,
)

__all__ = [
    "REGIONS",
    "DecodedMessage",
    "EncodedMessage",
    "EncryptionMode",
    "PushCodec",
    "PushMessageRejected",
    "RateLimit",
    "Region",
    "RejectReason",
    "RetryPolicy",
    "TuyaApiError",
    "TuyaError",
    "TuyaMessage",
    "TuyaOpenApiClient",
    "TuyaResponseError",
    "TuyaTransportError",
    "api_error",
    "decode",
    "encode",
    "encrypt_ecb",
    "encrypt_gcm",
    "parse_message",
    "pulsar_password",
    "push_sign",
    "region",
    "sign_request",
    "unwrap_response",
    "verify_push_sign",
    "verify_request",
]
