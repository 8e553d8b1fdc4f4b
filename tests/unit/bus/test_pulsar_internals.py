"""The guard on third-party internals: the installed pulsar-client and FastStream are the versions the one
module touching their private parts was written against, and every private name it uses still exists."""

from __future__ import annotations

import hashlib
import inspect
from importlib import metadata

import _pulsar
import pulsar
import pytest
from fast_depends.core import CallModel
from faststream._internal.di import FastDependsConfig
from faststream._internal.endpoint.call_wrapper import HandlerCallWrapper
from faststream._internal.endpoint.publisher import PublisherUsecase
from faststream._internal.endpoint.subscriber.call_item import HandlerItem
from pulsar import asyncio as pa

from fleet_shared.pulsar import internals

pytestmark = pytest.mark.unit


def test_installed_versions_are_the_ones_the_internals_were_written_against() -> None:
    mismatches = internals.version_mismatches()
    assert not mismatches, "\n".join(mismatches)


def test_the_guard_names_the_package_and_both_versions_when_they_differ(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(internals, "WRITTEN_AGAINST", {"pulsar-client": "0.0.1"})
    [message] = internals.version_mismatches()
    installed = metadata.version("pulsar-client")
    assert message.startswith(f"pulsar-client {installed} is installed")
    assert "written against 0.0.1" in message


def test_faststream_hooks_overridden_or_called_still_exist() -> None:
    missing = [
        f"{cls.__qualname__}.{name}"
        for cls, names in internals.FASTSTREAM_HOOKS.items()
        for name in names
        if not hasattr(cls, name)
    ]
    assert not missing, f"FastStream no longer has {missing}: see fleet_shared.pulsar.internals"


def test_private_members_read_through_internals_still_exist() -> None:
    # pulsar.asyncio sets these in __init__: read them off the source, as there is no client to build here.
    assert "self._consumer" in inspect.getsource(pa.Consumer.__init__)
    assert "self._schema" in inspect.getsource(pa.Consumer.__init__)
    assert "self._producer" in inspect.getsource(pa.Producer.__init__)
    assert "self._client" in inspect.getsource(pa.Client.__init__)
    assert "self._message" in inspect.getsource(pulsar.Message._wrap)
    assert hasattr(_pulsar, "MessageBuilder")
    assert "self._serializer" in inspect.getsource(FastDependsConfig)
    assert "self.handler" in inspect.getsource(HandlerItem)
    assert "self._publishers" in inspect.getsource(HandlerCallWrapper)
    assert hasattr(PublisherUsecase, "_publish")
    assert "self._wrapped_call" in inspect.getsource(HandlerCallWrapper.call_wrapped)
    assert inspect.isgeneratorfunction(CallModel._solve)


def test_a_native_message_round_trips_through_the_wrapper() -> None:
    native = internals.build_message(b"body", {"a": "1"}, "device-1")
    wrapped = internals.wrap_message(native, pulsar.schema.BytesSchema())
    assert internals.is_wrapped_message(wrapped)
    assert internals.native_message(wrapped) is native


# `producer_message` and `sent_message_id` do what this pulsar-client source does. When an upgrade changes it,
# re-read the new version, port the change, then update the digest.
MIRRORED_SEND = "4c051d7537ba4044"


def test_the_send_mirrors_the_pulsar_client_version_it_was_written_against() -> None:
    digest = hashlib.sha256(inspect.getsource(pa.Producer.send).encode()).hexdigest()[:16]
    assert digest == MIRRORED_SEND, (
        "pulsar.asyncio.Producer.send changed: port the change to fleet_shared.pulsar.internals."
        f"producer_message/sent_message_id, then set MIRRORED_SEND = {digest!r}"
    )


def test_a_send_message_carries_what_pulsar_asyncio_would_set() -> None:
    native = internals.producer_message(b"body", {"a": "1"}, "device-1", "order-1", 1234, None)
    wrapped = internals.wrap_message(native, pulsar.schema.BytesSchema())
    assert wrapped.data() == b"body"
    assert wrapped.properties() == {"a": "1"}
    assert wrapped.partition_key() == "device-1"
    assert wrapped.ordering_key() == "order-1"
    assert wrapped.event_timestamp() == 1234
