"""`direct_call` calls a handler exactly as FastStream's FastDepends wrappers do, for the handlers it takes:
same arguments, same validation errors, same return-value cast, same exceptions; every other handler keeps
FastDepends' wrapper."""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Annotated, Any, cast

import pytest
from fast_depends import Depends
from fast_depends.core import CallModel
from fast_depends.use import _wrap_inject
from faststream import Context
from faststream._internal.context.repository import ContextScope
from faststream._internal.di import FastDependsConfig
from faststream._internal.di.config import _unwrap_message_to_fast_depends_decorator
from faststream._internal.endpoint.call_wrapper import HandlerCallWrapper
from faststream._internal.endpoint.subscriber.call_item import HandlerItem
from faststream.message import StreamMessage
from pydantic import BaseModel

from fleet_shared.pulsar import InlineContext, PulsarBroker, PulsarMessage
from fleet_shared.pulsar.handler_call import direct_call
from fleet_shared.pulsar.message import PulsarParser
from fleet_shared.pulsar.testing import FakeMessage

pytestmark = pytest.mark.unit

# `direct_call`, `PulsarSubscriber.process_message`'s context variables and `_call_handler`, and
# `PulsarMessage.ack` mirror these sources. When an
# upgrade changes one, re-read the new version, port the change, then update its digest.
MIRRORED = {
    "fast_depends CallModel.asolve": (CallModel.asolve, "e1146788426685f6"),
    "fast_depends use._wrap_inject": (_wrap_inject, "47ce8ed7c1fc505c"),
    "faststream FastDependsConfig.build_call": (FastDependsConfig.build_call, "24211f0c4b691f05"),
    "faststream _unwrap_message_to_fast_depends_decorator": (
        _unwrap_message_to_fast_depends_decorator,
        "796185d62b1a17e2",
    ),
    "faststream ContextScope": (ContextScope, "692e8721e34340d0"),
    "faststream StreamMessage.ack": (StreamMessage.ack, "a9c1157a7092efa2"),
    "faststream HandlerItem.call": (HandlerItem.call, "13d3e7f4c791db64"),
    "faststream HandlerCallWrapper.call_wrapped": (HandlerCallWrapper.call_wrapped, "7cdd12d114b7ef31"),
}


@pytest.mark.parametrize("name", MIRRORED)
def test_the_mirrored_sources_are_the_versions_it_was_written_against(name: str) -> None:
    source, pinned = MIRRORED[name]
    digest = hashlib.sha256(inspect.getsource(source).encode()).hexdigest()[:16]
    assert digest == pinned, (
        f"{name} changed: port the change to fleet_shared.pulsar (handler_call.py, subscriber.py, "
        f"message.py), then pin {digest!r}"
    )


class Event(BaseModel):
    device_id: str
    seq: int


Call = Callable[[StreamMessage[Any]], Awaitable[Any]]


def both_calls(
    handler: Callable[..., Any], **broker_options: Any
) -> tuple[FastDependsConfig, Call, Call | None]:
    """FastStream's wrapped call of `handler` and the direct call, from one build (as a subscriber does)."""
    fd_config = PulsarBroker(**broker_options).config.fd_config
    built = fd_config.build_call(handler)
    item = SimpleNamespace(dependant=built.dependent)
    return fd_config, built.wrapped_call, direct_call(cast("Any", item), fd_config)


async def message(body: bytes, content_type: str = "application/json") -> PulsarMessage:
    parser = PulsarParser(settler=None)
    raw = FakeMessage(body, topic="t", properties={"content-type": content_type, "correlation_id": "c-1"})
    msg = await parser.parse_message(cast("Any", raw))
    msg.set_decoder(parser.decode_message)
    return msg


async def outcome(
    fd_config: FastDependsConfig, call: Call, body: bytes, content_type: str
) -> tuple[Any, ...]:
    msg = await message(body, content_type)
    with fd_config.context.scope("message", msg):
        try:
            return ("returned", await call(msg))
        except Exception as e:
            return ("raised", type(e), str(e))


async def typed(e: Event) -> None:
    assert isinstance(e, Event)


async def cast_return(body: dict[str, int]) -> dict[str, int]:
    return {"n": str(body["n"] + 1)}  # type: ignore[dict-item]  # FastDepends casts it back to int


async def bad_return(body: dict[str, int]) -> int:
    return cast("int", "not a number")


async def with_message(body: dict[str, int], *, m: Annotated[PulsarMessage, InlineContext("message")]) -> str:
    return f"{body['n']} {m.correlation_id}"


async def message_only(message: Annotated[PulsarMessage, InlineContext("message")]) -> str:
    return message.body.decode()


async def fails(e: Event) -> None:
    raise RuntimeError(f"boom {e.seq}")


def sync_handler(e: Event) -> int:
    return e.seq * 2


async def text(body: str) -> str:
    return body.upper()


async def untyped(body: Any) -> Any:
    return body


JSON_CASES: list[tuple[Callable[..., Any], bytes]] = [
    (typed, b'{"device_id": "d1", "seq": 1}'),
    (typed, b'{"device_id": "d1", "seq": "x"}'),
    (typed, b'{"device_id": "d1"}'),
    (typed, b"not json"),
    (cast_return, b'{"n": 1}'),
    (bad_return, b'{"n": 1}'),
    (message_only, b'{"n": 1}'),
    (with_message, b'{"n": 1}'),
    (with_message, b'{"n": "x"}'),
    (fails, b'{"device_id": "d1", "seq": 7}'),
    (sync_handler, b'{"device_id": "d1", "seq": 4}'),
    (untyped, b"[1, 2]"),
]
CASES = [(h, body, "application/json") for h, body in JSON_CASES] + [(text, b"hello", "text/plain")]


@pytest.mark.parametrize(("handler", "body", "content_type"), CASES)
async def test_the_direct_call_returns_and_raises_what_fastdepends_does(
    handler: Callable[..., Any], body: bytes, content_type: str
) -> None:
    fd_config, wrapped, direct = both_calls(handler)
    assert direct is not None, handler.__name__
    expected = await outcome(fd_config, wrapped, body, content_type)
    assert await outcome(fd_config, direct, body, content_type) == expected


def dependency() -> int:
    return 1


async def with_dependency(body: dict[str, int], n: int = Depends(dependency)) -> None: ...


async def two_arguments(device_id: str, seq: int) -> None: ...


async def with_context(body: dict[str, int], broker: Any = Context()) -> None: ...  # noqa: B008


@pytest.mark.parametrize("handler", [with_dependency, two_arguments, with_context])
def test_handlers_needing_more_than_the_direct_call_keep_fastdepends(handler: Callable[..., Any]) -> None:
    assert both_calls(handler)[2] is None


def test_without_fastdepends_nothing_is_replaced() -> None:
    assert both_calls(typed, apply_types=False)[2] is None
