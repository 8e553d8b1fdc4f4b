"""FastStream's acknowledgement middleware (0.7.8), with the common case in one call instead of five.

`faststream.middlewares.AcknowledgementMiddleware` settles a message after its handler: ack on success,
per `AckPolicy` on an error, as the handler's `AckMessage`/`NackMessage`/`RejectMessage` says. Each
settlement goes through four nested coroutines (`__ack`, `__resolve_message`, `__do_with_logging`, then
`message.ack`): at tens of thousands of messages a second that nesting is a measurable part of what the bus
costs per message. `Acknowledgement` makes the same calls with the same outcomes, logging and suppression,
and acks a handled message with one await. `PulsarSubscriber` puts it where FastStream's stack has the
original; `tests/unit/bus` pins the FastStream source it mirrors.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from faststream._internal.middlewares import BaseMiddleware
from faststream.exceptions import AckMessage, HandlerException, NackMessage, RejectMessage
from faststream.middlewares import AcknowledgementMiddleware, AckPolicy

if TYPE_CHECKING:
    from types import TracebackType

    from faststream._internal.basic_types import AsyncFuncAny
    from faststream._internal.context.repository import ContextRepo
    from faststream._internal.logger import LoggerState
    from faststream._internal.types import AsyncCallable
    from faststream.message import StreamMessage


class AcknowledgementFactory:
    """Makes an `Acknowledgement` per message, from FastStream's factory's settings."""

    __slots__ = ("ack_policy", "fallback_parser", "logger")

    def __init__(self, original: AcknowledgementMiddleware) -> None:
        self.ack_policy: AckPolicy = original.ack_policy
        self.logger: LoggerState = original.logger
        self.fallback_parser: AsyncCallable = original.fallback_parser

    def __call__(self, msg: Any | None, /, *, context: ContextRepo) -> Acknowledgement:
        return Acknowledgement(msg, context=context, factory=self)


class Acknowledgement(BaseMiddleware):
    """One message's settlement: what FastStream's `_AcknowledgementMiddleware` does, step for step."""

    __slots__ = ("_factory", "message")

    def __init__(self, msg: Any | None, /, *, context: ContextRepo, factory: AcknowledgementFactory) -> None:
        super().__init__(msg, context=context)
        self._factory = factory
        self.message: StreamMessage[Any] | None = None

    async def consume_scope(self, call_next: AsyncFuncAny, msg: StreamMessage[Any]) -> Any:
        self.message = msg
        if self._factory.ack_policy is AckPolicy.ACK_FIRST:
            await self._settle("ack")
        return await call_next(msg)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_val: BaseException | None = None,
        exc_tb: TracebackType | None = None,
    ) -> bool | None:
        policy = self._factory.ack_policy
        if policy is AckPolicy.ACK_FIRST:
            if self.message is None:
                await self._settle("ack")
            return False
        if not exc_type:
            message = self.message
            if message is None:
                await self._settle("ack")
                return False
            try:  # the common case, inline: a handled message is acked
                await message.ack()
            except Exception as er:
                self._log(er)
            return False
        if isinstance(exc_val, HandlerException):
            if isinstance(exc_val, AckMessage):
                await self._settle("ack", exc_val.extra_options)
            elif isinstance(exc_val, NackMessage):
                await self._settle("nack", exc_val.extra_options)
            elif isinstance(exc_val, RejectMessage):  # pragma: no branch
                await self._settle("reject", exc_val.extra_options)
            return True  # processed and suppressed
        if isinstance(exc_val, asyncio.CancelledError):
            return False
        if policy is AckPolicy.REJECT_ON_ERROR:
            await self._settle("reject")
        elif policy is AckPolicy.NACK_ON_ERROR:
            await self._settle("nack")
        elif policy is AckPolicy.ACK:
            await self._settle("ack")
        return False  # not processed

    async def _settle(self, how: str, options: dict[str, Any] | None = None) -> None:
        """`message.ack/nack/reject(**options)`; the message parsed by the fallback parser if the handler
        never got one; any error logged (CRITICAL) and swallowed."""
        message = self.message
        if message is None:
            try:
                message = await self._factory.fallback_parser(self.msg)
            except Exception as er:
                self._log(er)
                return
            if not message:
                return
        try:
            await getattr(message, how)(**(options or {}))
        except Exception as er:
            self._log(er)

    def _log(self, error: Exception) -> None:
        logger = self._factory.logger
        if logger is not None:
            logger.log(repr(error), logging.CRITICAL, exc_info=error)
