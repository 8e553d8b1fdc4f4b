"""Tuya's push topic on pulsar.asyncio: a Failover subscription `{access_id}-sub`, as Tuya's own SDKs use.

Works against Tuya's cloud (`pulsar+ssl://mqe.tuyaeu.com:7285`, `auth1` authentication, TLS) and against the
simulator on our own Pulsar (plain `pulsar://`, or the bus's token and CA given as `client_options`). One
long-lived `receive()` at a time: cancelling a receive loses its message until redelivery (pulsar.asyncio
pitfall), so the pipeline never does; closing the consumer ends a pending receive instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
import pulsar
from pulsar import asyncio as pa

from fleet_contracts import topics
from fleet_ingest.domain.model import TuyaDelivery
from fleet_ingest.ports import Received
from fleet_shared.pulsar import internals, receive_ready
from fleet_shared.tuya.signing import pulsar_auth_data

log = logging.getLogger(__name__)


def tuya_authentication(access_id: str, access_secret: str) -> pulsar.AuthenticationBasic:
    """Tuya's `auth1`: the auth data is the JSON `{"username": id, "password": pwd}` (REFERENCE §1).

    pulsar-client has no Python hook for custom authentication; like Tuya's Python SDK we use the stock basic
    provider with method `auth1`, split so that its `username:password` join rebuilds that JSON exactly.
    """
    data = orjson.dumps(pulsar_auth_data(access_id, access_secret)).decode()
    cut = data.rindex(":")  # between `"password"` and its value (the value is hex: no colon)
    return pulsar.AuthenticationBasic(data[:cut], data[cut + 1 :], method="auth1")


def to_delivery(message: pulsar.Message) -> TuyaDelivery:
    message_id = message.message_id()
    return TuyaDelivery(
        payload=message.data(),
        properties=message.properties(),
        message_id=str(message_id),
        topic=str(message.topic_name()),
        key=message.partition_key() or None,
        publish_time_ms=int(message.publish_timestamp()),
        redelivery_count=int(message.redelivery_count()),
        position=(message_id.ledger_id(), message_id.entry_id(), message_id.batch_index()),
    )


class PulsarTuyaSource:
    """The Tuya topic on a `pulsar.asyncio.Client` of its own (Tuya's cluster is not our bus)."""

    def __init__(
        self,
        *,
        service_url: str,
        access_id: str,
        access_secret: str | None,
        authenticate: bool,
        test_channel: bool = False,
        receiver_queue_size: int = 1000,
        tls_trust_certs_file: str | None = None,
        tls_allow_insecure: bool = False,
        tls_validate_hostname: bool = False,
        initial_position_earliest: bool = True,
        operation_timeout_s: int = 30,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        """`client_options`: other `pulsar.Client` keywords (the simulator on our own bus: its token and CA);
        an `authentication` there and Tuya's (`authenticate`) together are refused."""
        self._topic = topics.tuya_event_topic(access_id, test=test_channel)
        self._subscription = topics.tuya_subscription(access_id)
        self._receiver_queue_size = receiver_queue_size
        self._earliest = initial_position_earliest
        kwargs: dict[str, Any] = {
            "operation_timeout_seconds": operation_timeout_s,
            "logger": pulsar.ConsoleLogger(pulsar.LoggerLevel.Warn),
        }
        if authenticate:
            if not access_secret:
                raise ValueError("Tuya authentication needs the access secret")
            kwargs["authentication"] = tuya_authentication(access_id, access_secret)
        if service_url.startswith("pulsar+ssl://"):
            kwargs["tls_allow_insecure_connection"] = tls_allow_insecure
            kwargs["tls_validate_hostname"] = tls_validate_hostname
            if tls_trust_certs_file:
                kwargs["tls_trust_certs_file_path"] = tls_trust_certs_file
        if authenticate and client_options and "authentication" in client_options:
            raise ValueError("one authentication per client: Tuya's auth1 or the given one, not both")
        kwargs.update(client_options or {})
        self._service_url = service_url
        self._client_kwargs = kwargs
        self._client: pa.Client | None = None
        self._consumer: pa.Consumer | None = None

    @property
    def topic(self) -> str:
        return self._topic

    @property
    def subscription(self) -> str:
        return self._subscription

    async def subscribe(self) -> None:
        if self._client is None:
            # Created here, inside the running loop, never at import (the client is not fork-safe).
            self._client = pa.Client(self._service_url, **self._client_kwargs)
        self._consumer = await self._client.subscribe(
            self._topic,
            self._subscription,
            consumer_type=pulsar.ConsumerType.Failover,
            receiver_queue_size=self._receiver_queue_size,
            initial_position=(
                pulsar.InitialPosition.Earliest if self._earliest else pulsar.InitialPosition.Latest
            ),
        )
        log.info(
            "subscribed to Tuya's topic", extra={"topic": self._topic, "subscription": self._subscription}
        )

    async def receive(self) -> Received:
        if self._consumer is None:
            raise RuntimeError("not subscribed")
        message = await self._consumer.receive()
        return Received(to_delivery(message), message)

    def receive_ready(self, limit: int) -> list[Received]:
        """Up to `limit` messages already in the client's queue, without waiting.

        An awaited receive costs an event-loop iteration per message; taking what has already arrived in one
        go is what lets a busy loop keep up with the stream. Order is the consumer's order either way.
        """
        consumer = self._consumer
        if consumer is None:
            return []
        return [Received(to_delivery(m), m) for m in receive_ready(consumer, limit)]

    def acknowledge(self, received: Sequence[Received]) -> None:
        """Ack each message individually, fire and forget (a lost ack only means a redelivery, which dedup
        absorbs). The client queues acks and sends them in groups. Never cumulatively: on a handover the
        broker may deliver a partition's later messages before the ones the previous consumer left unacked,
        and a cumulative ack of those later ones would ack the earlier ones unprocessed."""
        consumer = self._consumer
        if consumer is None:
            return
        ack = internals.native_consumer(consumer).acknowledge_async
        native = internals.native_message
        for one in received:
            ack(native(one.handle), _ignore)

    async def close_consumer(self) -> None:
        """Close the consumer: Pulsar redelivers every unacked message, in order, to the next one."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            try:
                await consumer.close()
            except pa.PulsarException as exc:
                log.warning("closing the Tuya consumer failed: %s", exc)

    async def close(self) -> None:
        await self.close_consumer()
        client, self._client = self._client, None
        if client is not None:
            # The blocking close on a worker thread: the asyncio close leaves its Python callback to a client
            # thread, which can abort the process at exit (see `PulsarBroker._close_client`).
            native = internals.native_client(client)
            try:
                await (client.close() if native is None else asyncio.to_thread(native.close))
            except (pa.PulsarException, pulsar.PulsarException) as exc:
                log.warning("closing the Tuya Pulsar client failed: %s", exc)

    async def ping(self) -> bool:
        return self._consumer is not None and self._client is not None


def _ignore(*_: Any) -> None:
    """Ack callback (on a client thread, or inline): must never raise; a failed ack means a redelivery."""
