"""Every touch of pulsar-client's and FastStream's private internals, in one place, for the versions below.

The bus reaches past two public APIs where they cost too much per message or offer no hook:

pulsar-client (`pulsar.asyncio` wraps the C++ client's `_pulsar` objects and hides them):
  - `Client._client`: closed with the blocking call on a worker thread (broker.py says why).
  - `Consumer._consumer`, `Consumer._schema`: receive what the client already holds, and queue acks,
    without a future and a loop wake-up per message (receiver.py, ingest's Tuya consumer).
  - `Message._message`, `Message._schema`: wrap a native message as `pulsar.Message`, and unwrap it to ack.
  - `Producer._producer`: start a send with a callback on the client's thread, and flush it (producer.py);
    `producer_message` and `sent_message_id` build and answer a send as `pulsar.asyncio.Producer.send` does.
  - `_pulsar.MessageBuilder`: the native message a send takes (the public builder lives on `pulsar.Producer`).

FastStream (its brokers are built on `faststream._internal`; these go further, into private members):
  - `FastDependsConfig._serializer`: the serializer a producer encodes with (broker.py, testing.py).
  - `HandlerItem.handler._publishers`, `PublisherUsecase._publish`, and the name-mangled
    `SubscriberUsecase.__build__middlewares_stack`: the per-message path `PulsarSubscriber.process_message`
    mirrors (tests/unit/bus pins that source too).
  - `HandlerItem.handler._wrapped_call`: replaced by `handler_call.direct_call` after each build, and called
    by `PulsarSubscriber._call_handler` (which mirrors `HandlerItem.call` and `call_wrapped`).
  - Hooks overridden or extended, not read: `SubscriberUsecase._broker_middlewares`,
    `SubscriberUsecase._make_response_publisher`, `SubscriberUsecase._build_fastdepends_model`,
    `TestBroker._fake_start`, `TestBroker._fake_close`.

FastDepends (FastStream's dependency injection):
  - `CallModel._solve`: the generator that binds, validates and casts a handler's arguments and return value,
    driven by `handler_call.direct_call` as `CallModel.asolve` drives it (tests/unit/bus pins asolve).
  - Mirrored, not touched: `acknowledgement.py` does what the private `_AcknowledgementMiddleware` does
    (tests/unit/bus pins its source), built from the public factory's `ack_policy`, `logger` and
    `fallback_parser`.

`WRITTEN_AGAINST` names the exact versions this was written and measured against; a unit test fails with
`version_mismatches()`'s message when an installed version differs, and another checks every name above
still exists. On an upgrade: re-read each use against the new source, then update the pins.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping
from datetime import timedelta
from importlib import metadata
from typing import Any, cast

import _pulsar
import pulsar
from faststream._internal.endpoint.subscriber import SubscriberUsecase
from faststream._internal.testing.broker import TestBroker
from pulsar import asyncio as pa

WRITTEN_AGAINST: Mapping[str, str] = {
    "pulsar-client": "3.13.0",
    "faststream": "0.7.8",
    "fast-depends": "3.0.9",
}

#: FastStream's private hooks this package overrides or calls through `super()` (checked by a unit test).
FASTSTREAM_HOOKS: Mapping[type[Any], tuple[str, ...]] = {
    SubscriberUsecase: (
        "_SubscriberUsecase__build__middlewares_stack",
        "_broker_middlewares",
        "_build_fastdepends_model",
        "_make_response_publisher",
    ),
    TestBroker: ("_fake_start", "_fake_close"),
}


def version_mismatches() -> list[str]:
    """One line per package whose installed version is not the one this module was written against."""
    out = []
    for package, pinned in WRITTEN_AGAINST.items():
        installed = metadata.version(package)
        if installed != pinned:
            out.append(
                f"{package} {installed} is installed, fleet_shared.pulsar.internals was written against "
                f"{pinned}: re-check every private access listed in that module, then update WRITTEN_AGAINST"
            )
    return out


# -- pulsar-client ---------------------------------------------------------------------------------------


def is_wrapped_consumer(consumer: object) -> bool:
    """Whether `consumer` is a `pulsar.asyncio.Consumer` holding the native consumer and schema."""
    return type(consumer) is pa.Consumer and hasattr(consumer, "_consumer") and hasattr(consumer, "_schema")


def native_consumer(consumer: object) -> Any:
    """The C++ client's consumer behind a `pulsar.asyncio.Consumer`."""
    return cast("Any", consumer)._consumer


def consumer_schema(consumer: object) -> Any:
    return cast("Any", consumer)._schema


def wrap_message(native: Any, schema: Any) -> pulsar.Message:
    """A native message as the `pulsar.Message` the asyncio API returns."""
    message = pulsar.Message()
    message._message = native
    message._schema = schema
    return message


def native_message(message: object) -> Any:
    return cast("Any", message)._message


def is_wrapped_message(message: object) -> bool:
    return type(message) is pulsar.Message


def native_client(client: object) -> Any | None:
    """The C++ client behind a `pulsar.asyncio.Client` (its blocking `close()` takes no Python callback);
    None for anything else (the test broker's fake client)."""
    return getattr(client, "_client", None) if type(client) is pa.Client else None


def native_producer(producer: object) -> Any | None:
    """The C++ client's producer behind a `pulsar.asyncio.Producer`, or None if it keeps none."""
    return getattr(producer, "_producer", None)


def build_message(body: bytes, properties: Mapping[str, str], key: str | None) -> Any:
    """A native message for `send_async`: content, properties and partition key only."""
    builder = _pulsar.MessageBuilder()
    builder.content(body)
    for name, value in properties.items():
        builder.property(name, value)
    if key:
        builder.partition_key(key)
    return builder.build()


def producer_message(
    body: bytes,
    properties: Mapping[str, str] | None,
    partition_key: str | None,
    ordering_key: str | None,
    event_timestamp: int | None,
    deliver_after: timedelta | None,
) -> Any:
    """The native message `pulsar.asyncio.Producer.send` builds from these arguments (bytes content), the
    same builder calls in the same order (tests/unit/bus pins that source)."""
    builder = _pulsar.MessageBuilder()
    builder.content(body)
    if properties is not None:
        for name, value in properties.items():
            builder.property(name, value)
    if partition_key is not None:
        builder.partition_key(partition_key)
    if ordering_key is not None:
        builder.ordering_key(ordering_key)
    if event_timestamp is not None:
        builder.event_timestamp(event_timestamp)
    if deliver_after is not None:
        builder.deliver_after(deliver_after)
    return builder.build()


def sent_message_id(native: Any) -> pulsar.MessageId:
    """What `pulsar.asyncio.Producer.send` returns for the native id the client confirmed a send with."""
    return pulsar.MessageId(native.partition(), native.ledger_id(), native.entry_id(), native.batch_index())


# -- FastStream ------------------------------------------------------------------------------------------


def fast_depends_serializer(fd_config: object) -> Any:
    """The serializer FastStream's FastDependsConfig was given (it has no public getter)."""
    return cast("Any", fd_config)._serializer


def handler_publishers(call_item: object) -> Iterable[Any]:
    """The publishers decorating a subscriber's handler (`@broker.publisher` under `@broker.subscriber`)."""
    publishers: Iterable[Any] = cast("Any", call_item).handler._publishers
    return publishers


def publish_with_middlewares(publisher: object, cmd: object, middlewares: Iterable[Any]) -> Awaitable[Any]:
    """A publisher's own publish path with the consume scope's publish middlewares, as FastStream does
    (returned to be awaited: no extra coroutine on the per-message path)."""
    publish: Callable[..., Awaitable[Any]] = cast("Any", publisher)._publish
    return publish(cmd, _extra_middlewares=middlewares)


def wrapped_call(handler: object) -> Callable[[Any], Awaitable[Any]]:
    """What a handler wrapper's `call_wrapped` awaits (outside tests, all it does)."""
    call: Callable[[Any], Awaitable[Any]] = cast("Any", handler)._wrapped_call
    return call


def set_handler_call(call_item: object, call: Callable[[Any], Awaitable[Any]]) -> None:
    """Make `call` what a handler item's wrapper calls per message (until FastStream builds it again)."""
    cast("Any", call_item).handler._wrapped_call = call


def argument_solver(model: object) -> Callable[..., Generator[Any, Any, Any]]:
    """FastDepends' `CallModel._solve` of `model`: the generator `asolve` drives (arguments bound and
    validated when sent the custom fields' values, the return value cast when sent the handler's result)."""
    solver: Callable[..., Generator[Any, Any, Any]] = cast("Any", model)._solve
    return solver


def build_middlewares_stack(subscriber: SubscriberUsecase[Any]) -> list[Any]:
    """FastStream's own middleware factories for a subscriber (acknowledgement, critical log, broker's)."""
    build: Callable[[], Iterable[Any]] = cast("Any", subscriber)._SubscriberUsecase__build__middlewares_stack
    return list(build())
