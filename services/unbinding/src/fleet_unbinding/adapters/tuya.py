"""Tuya OpenAPI use of the unbinding service, through the shared client (`fleet_shared.tuya.openapi`).

Maps the client's typed errors onto the two the handlers reason about: `TuyaRefused` (Tuya answered with an
error code) and `TuyaUnreachable` (no usable answer: whether a call ran is unknown). The removal is not
idempotent, so the client never retries it; the device state machine reconciles instead.

Removals (unbind and unbind + reset alike: Tuya counts them against one limit) go through one `Pacer`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from pydantic import SecretStr

from fleet_shared.tuya.errors import (
    TuyaApiError,
    TuyaDeviceNotFoundError,
    TuyaResponseError,
    TuyaTransportError,
)
from fleet_shared.tuya.models import PairingType
from fleet_shared.tuya.openapi import TuyaOpenApiClient
from fleet_shared.tuya.pairing import PairingApi
from fleet_unbinding.domain.unbind import DeviceFacts
from fleet_unbinding.ports import Clock, QrToken, TuyaRefused, TuyaUnreachable


class Pacer:
    """Calls at `rate` per second on average, FIFO, at most `burst` at once (GCRA: each call's slot is the
    previous slot + 1/rate, never earlier than `(burst - 1) / rate` before now).

    A caller that wakes late does not push the schedule back while the queue is busy: the next slot is
    still one interval after the previous *slot*, so a loaded event loop's late wake-ups cost no rate as
    long as they stay under `(burst - 1) / rate`. In any window of T seconds at most `burst + rate * T`
    calls start: with `rate + burst` at most Tuya's per-second limit, no second is ever above it."""

    def __init__(
        self,
        rate: float,
        burst: float = 1.5,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.interval = 1.0 / rate
        self.tolerance = (burst - 1.0) / rate
        self._clock = clock
        self._sleep = sleep
        self._next = 0.0  # the theoretical start of the next call
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        async with self._lock:
            now = self._clock()
            slot = max(self._next, now - self.tolerance)
            if slot > now:
                await self._sleep(slot - now)
            self._next = slot + self.interval


class TuyaDevices:
    """`in_flight`: removal calls under way at most (0: no cap). Tuya judges its limit when a call reaches
    it: calls paced evenly but held up on the way (a stalled cloud, a busy network) arrive together and
    all but the burst are refused 1199. With a cap, a stall holds at most that many (>= rate x round trip
    + 1, or the cap itself slows the pace)."""

    def __init__(
        self,
        client: TuyaOpenApiClient,
        *,
        removals: Pacer | None = None,
        legacy_removal: bool = False,
        in_flight: int = 0,
    ) -> None:
        self.client = client
        self.removals = removals
        self.legacy_removal = legacy_removal
        self._in_flight = asyncio.Semaphore(in_flight) if in_flight > 0 else None

    async def lookup(self, device_id: str) -> DeviceFacts | None:
        try:
            d = await self.client.get_device(device_id)
        except TuyaDeviceNotFoundError:
            return None
        except TuyaApiError as e:
            raise TuyaRefused(None if e.code is None else str(e.code)) from None
        except (TuyaTransportError, TuyaResponseError) as e:
            raise TuyaUnreachable(type(e).__name__) from None
        return DeviceFacts(d.id, d.product_id, d.uid or None, d.active_time, d.online)

    async def remove(self, device_id: str, *, reset: bool) -> None:
        if self._in_flight is None:
            await self._remove(device_id, reset=reset)
            return
        async with self._in_flight:
            await self._remove(device_id, reset=reset)

    async def _remove(self, device_id: str, *, reset: bool) -> None:
        if self.removals is not None:
            await self.removals.wait()
        try:
            if reset:
                done = await self.client.factory_reset_device(device_id, legacy=self.legacy_removal)
            else:
                done = await self.client.remove_device(device_id, legacy=self.legacy_removal)
        except TuyaApiError as e:
            raise TuyaRefused(None if e.code is None else str(e.code)) from None
        except (TuyaTransportError, TuyaResponseError) as e:
            raise TuyaUnreachable(type(e).__name__) from None
        if not done:
            # success without `result: true`: not a confirmation, so the state machine reconciles
            raise TuyaUnreachable("removal answered without result true")


class TuyaPairingTokens:
    """Pairing tokens for QR unbinding sessions, and the devices that failed to pair with one."""

    def __init__(self, client: TuyaOpenApiClient, clock: Clock) -> None:
        self.client = client
        self.pairing = PairingApi(client)
        self.clock = clock

    async def issue(self, *, uid: str, home_id: str | None, time_zone_id: str) -> QrToken:
        try:
            t = await self.pairing.create_token(
                uid=uid, time_zone_id=time_zone_id, pairing_type=PairingType.EZ, home_id=home_id
            )
        except TuyaApiError as e:
            raise TuyaRefused(None if e.code is None else str(e.code)) from None
        except (TuyaTransportError, TuyaResponseError) as e:
            raise TuyaUnreachable(type(e).__name__) from None
        expires: datetime | None = None
        if t.expire_time is not None:
            expires = self.clock() + timedelta(seconds=t.expire_time)
        return QrToken(t.token, SecretStr(t.assembled_token()), expires)

    async def failed_devices(self, token: str) -> list[tuple[str, str | None]]:
        try:
            result = await self.pairing.token_result(token)
        except TuyaApiError as e:
            raise TuyaRefused(None if e.code is None else str(e.code)) from None
        except (TuyaTransportError, TuyaResponseError) as e:
            raise TuyaUnreachable(type(e).__name__) from None
        return [(f.device_id, f.code) for f in result.failed if f.device_id]
