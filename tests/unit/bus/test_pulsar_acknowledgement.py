"""`Acknowledgement` settles every message exactly as FastStream's acknowledgement middleware does."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
from typing import Any

import pytest
from faststream._internal.context import ContextRepo
from faststream.exceptions import AckMessage, NackMessage, RejectMessage
from faststream.middlewares import AcknowledgementMiddleware, AckPolicy
from faststream.middlewares.acknowledgement.middleware import _AcknowledgementMiddleware

from fleet_shared.pulsar.acknowledgement import AcknowledgementFactory

pytestmark = pytest.mark.unit

# `Acknowledgement` mirrors this FastStream source. When an upgrade changes it, re-read the new version,
# port the change, then update the digest.
MIRRORED_ACKNOWLEDGEMENT = "e03d0e67bc678ddf"


def test_acknowledgement_mirrors_the_faststream_version_it_was_written_against() -> None:
    source = inspect.getsource(_AcknowledgementMiddleware)
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    assert digest == MIRRORED_ACKNOWLEDGEMENT, (
        "FastStream's _AcknowledgementMiddleware changed: port the change to fleet_shared.pulsar."
        f"acknowledgement, then set MIRRORED_ACKNOWLEDGEMENT = {digest!r}"
    )


class Message:
    def __init__(self, calls: list[str], fails: bool) -> None:
        self.calls = calls
        self.fails = fails

    async def _settle(self, how: str, kwargs: dict[str, Any]) -> None:
        self.calls.append(f"{how}{sorted(kwargs.items()) if kwargs else ''}")
        if self.fails:
            raise RuntimeError(f"{how} failed")

    async def ack(self, **kwargs: Any) -> None:
        await self._settle("ack", kwargs)

    async def nack(self, **kwargs: Any) -> None:
        await self._settle("nack", kwargs)

    async def reject(self, **kwargs: Any) -> None:
        await self._settle("reject", kwargs)


class Logger:
    def __init__(self) -> None:
        self.lines: list[tuple[str, int, str]] = []

    def log(self, message: str, level: int, extra: Any = None, exc_info: Any = None) -> None:
        self.lines.append((message, level, type(exc_info).__name__))


async def settle(
    mirror: bool,
    policy: AckPolicy,
    error: BaseException | None,
    *,
    handled: bool,
    settling_fails: bool,
    parsing_fails: bool,
) -> tuple[list[str], list[tuple[str, int, str]], bool | None]:
    """What the middleware did around one message: calls made, lines logged, what `__aexit__` returned."""
    calls: list[str] = []
    logger = Logger()
    message = Message(calls, settling_fails)

    async def fallback_parser(raw: Any) -> Message:
        calls.append("fallback parse")
        if parsing_fails:
            raise ValueError("unparseable")
        return message

    original = AcknowledgementMiddleware(
        logger=logger,  # type: ignore[arg-type]
        ack_policy=policy,
        fallback_parser=fallback_parser,
    )
    factory: Any = AcknowledgementFactory(original) if mirror else original
    middleware = factory(object(), context=ContextRepo())
    await middleware.__aenter__()
    if handled:

        async def handler(msg: Any) -> None:
            calls.append("handler")

        await middleware.consume_scope(handler, message)
    returned = await middleware.__aexit__(type(error) if error else None, error, None)
    return calls, logger.lines, returned


ERRORS: list[BaseException | None] = [
    None,
    ValueError("boom"),
    AckMessage(why="ack"),
    NackMessage(delay=2),
    RejectMessage(),
    asyncio.CancelledError(),
]


@pytest.mark.parametrize("policy", [p for p in AckPolicy if p is not AckPolicy.MANUAL])
@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("handled", [True, False], ids=["handled", "never-parsed"])
@pytest.mark.parametrize("settling_fails", [False, True], ids=["settles", "settling-fails"])
@pytest.mark.parametrize("parsing_fails", [False, True], ids=["parses", "parsing-fails"])
async def test_the_mirror_settles_like_faststream(
    policy: AckPolicy,
    error: BaseException | None,
    handled: bool,
    settling_fails: bool,
    parsing_fails: bool,
) -> None:
    case = {"handled": handled, "settling_fails": settling_fails, "parsing_fails": parsing_fails}
    expected = await settle(False, policy, error, **case)
    assert await settle(True, policy, error, **case) == expected


async def test_a_handled_message_is_acked_and_a_failing_ack_is_logged_critical() -> None:
    calls, lines, returned = await settle(
        True, AckPolicy.NACK_ON_ERROR, None, handled=True, settling_fails=True, parsing_fails=False
    )
    assert calls == ["handler", "ack"]
    assert lines == [("RuntimeError('ack failed')", logging.CRITICAL, "RuntimeError")]
    assert returned is False
