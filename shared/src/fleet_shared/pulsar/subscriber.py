"""Subscribers: one Pulsar consumer each, a long-lived receive loop, ack/nack/dead-letter settlement."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, cast

import anyio
import pulsar
from faststream._internal.configs import SubscriberSpecificationConfig, SubscriberUsecaseConfig
from faststream._internal.constants import EMPTY
from faststream._internal.endpoint.publisher.fake import FakePublisher
from faststream._internal.endpoint.subscriber import SubscriberSpecification, SubscriberUsecase
from faststream._internal.endpoint.subscriber.utils import MultiLock
from faststream._internal.endpoint.utils import process_msg
from faststream._internal.logger.logger_proxy import EmptyLoggerObject
from faststream._internal.middlewares import BaseMiddleware
from faststream.exceptions import HandlerException, IgnoredException, SubscriberNotFound
from faststream.message import AckStatus
from faststream.middlewares import AcknowledgementMiddleware, AckPolicy
from faststream.middlewares.logging import CriticalLogMiddleware
from faststream.response import ensure_response
from faststream.specification.asyncapi.utils import resolve_payloads
from faststream.specification.schema import Message, Operation, SubscriberSpec
from pulsar.asyncio import PulsarException
from typing_extensions import override

from fleet_contracts import deadletter as dead_letter_contract

from . import internals
from .acknowledgement import AcknowledgementFactory
from .config import PulsarBrokerConfig
from .deadletter import dead_letter_command
from .handler_call import direct_call
from .message import PulsarMessage, PulsarParser, PulsarPublishCommand
from .metrics import SubscriptionMetrics
from .opentelemetry import settle_span
from .options import DeadLetter, base_topic
from .receiver import NativeReceiver, acknowledge_now
from .workers import KeyOrderedWorkers

if TYPE_CHECKING:
    from types import TracebackType

    from faststream._internal.context import ContextRepo
    from faststream._internal.endpoint.publisher import PublisherProto
    from faststream._internal.endpoint.subscriber.call_item import CallsCollection, HandlerItem
    from faststream._internal.producer import ProducerProto
    from faststream._internal.types import BrokerMiddleware
    from faststream.message import StreamMessage
    from faststream.response import Response
    from faststream.response.response import PublishCommand
    from opentelemetry.trace import Span
    from pulsar import asyncio as pa

# Properties of a dead letter (documented in fleet_contracts.deadletter), under the broker's own names.
DLQ_ERROR = dead_letter_contract.PROPERTY_ERROR
DLQ_ERROR_TYPE = dead_letter_contract.PROPERTY_ERROR_TYPE
DLQ_ORIGINAL_TOPIC = dead_letter_contract.PROPERTY_ORIGINAL_TOPIC
DLQ_ORIGINAL_MESSAGE_ID = dead_letter_contract.PROPERTY_ORIGINAL_MESSAGE_ID
DLQ_REDELIVERY_COUNT = dead_letter_contract.PROPERTY_REDELIVERY_COUNT
DLQ_SUBSCRIPTION = dead_letter_contract.PROPERTY_SUBSCRIPTION


@dataclass(kw_only=True)
class PulsarSubscriberSpecificationConfig(SubscriberSpecificationConfig):
    topics: tuple[str, ...] = ()
    pattern: str | None = None
    subscription: str = ""


@dataclass(kw_only=True)
class PulsarSubscriberConfig(SubscriberUsecaseConfig):
    _outer_config: PulsarBrokerConfig = field(default_factory=PulsarBrokerConfig)

    topics: tuple[str, ...] = ()
    pattern: str | None = None
    subscription: str
    subscription_type: Any = pulsar.ConsumerType.Shared
    initial_position: Any = pulsar.InitialPosition.Latest
    negative_ack_redelivery_delay: float = 1.0
    dead_letter: DeadLetter | None = None
    receiver_queue_size: int = 1000
    consumer_name: str | None = None
    key_shared_policy: Any = None
    max_workers: int = 1

    @property
    def ack_policy(self) -> AckPolicy:
        # Nack on error by default so failures are redelivered and, with a DeadLetter, end up there.
        if self._ack_policy is not EMPTY:
            return self._ack_policy
        if self._outer_config.ack_policy is not EMPTY:
            return self._outer_config.ack_policy
        return AckPolicy.NACK_ON_ERROR


class PulsarSubscriberSpecification(
    SubscriberSpecification[PulsarBrokerConfig, PulsarSubscriberSpecificationConfig],
):
    __slots__ = ()

    @property
    def addresses(self) -> list[str]:
        prefix = self._outer_config.prefix
        if self.config.pattern:
            return [f"{prefix}{self.config.pattern}"]
        return list(dict.fromkeys(f"{prefix}{t}" for t in self.config.topics))

    @property
    def channel_labels(self) -> list[str]:
        return self.addresses

    def get_schema(self) -> dict[str, SubscriberSpec]:
        payloads = self.get_payloads()
        addresses = self.addresses
        channels = {}
        for address in addresses:
            name = self._channel_key(address, split=len(addresses) > 1)
            channels[name] = SubscriberSpec(
                address=address,
                description=self.description,
                operation=Operation(
                    message=Message(title=f"{name}:Message", payload=resolve_payloads(payloads)),
                    bindings=None,
                ),
                # AsyncAPI has no Pulsar binding FastStream can render.
                bindings=None,
            )
        return channels


class PulsarReplyPublisher(FakePublisher):
    """Publishes a handler's result to the `reply_to` topic of a request."""

    __slots__ = ("topic",)

    def __init__(self, producer: ProducerProto[PulsarPublishCommand], topic: str) -> None:
        super().__init__(producer=producer)
        self.topic = topic

    def patch_command(self, cmd: PublishCommand) -> PulsarPublishCommand:
        cmd = super().patch_command(cmd)
        reply = PulsarPublishCommand.from_cmd(cmd)
        reply.destination = self.topic
        return reply


class _RecordFailure(BaseMiddleware):
    """Innermost middleware: remembers why a delivery failed, for the dead-letter properties.

    It exits before the acknowledgement middleware, which nacks without knowing the exception.
    """

    def __init__(
        self,
        msg: Any,
        /,
        *,
        context: ContextRepo,
        failures: weakref.WeakKeyDictionary[Any, BaseException],
    ) -> None:
        super().__init__(msg, context=context)
        self._failures = failures

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_val: BaseException | None = None,
        exc_tb: TracebackType | None = None,
    ) -> bool | None:
        failed = isinstance(exc_val, Exception) and not isinstance(exc_val, HandlerException)
        if failed and exc_val is not None and self.msg is not None:
            self._failures[self.msg] = exc_val
        return False


@dataclass(frozen=True, slots=True)
class _Hooks:
    """Which of BaseMiddleware's hooks a middleware class overrides; the others do nothing, so the
    per-message path need not call them (BaseMiddleware's enter, exit and scopes only pass through)."""

    enters: bool
    exits: bool
    consumes: bool
    publishes: bool


_HOOKS: dict[type[Any], _Hooks] = {}


def _hooks_of(cls: type[Any]) -> _Hooks:
    if (hooks := _HOOKS.get(cls)) is None:
        hooks = _HOOKS[cls] = _overridden_hooks(cls)
    return hooks


def _overridden_hooks(cls: type[Any]) -> _Hooks:
    def own(*names: str) -> bool:
        return any(getattr(cls, n, None) is not getattr(BaseMiddleware, n) for n in names)

    if not issubclass(cls, BaseMiddleware):  # a middleware of its own making: call everything
        return _Hooks(enters=True, exits=True, consumes=True, publishes=True)
    return _Hooks(
        enters=own("__aenter__", "on_receive"),
        exits=own("__aexit__", "after_processed"),
        consumes=own("consume_scope"),
        publishes=own("publish_scope"),
    )


@dataclass(frozen=True, slots=True)
class _ScopeVars:
    """The ContextRepo variables a message is handled in: the fixed ones with values, then the message's."""

    base: tuple[tuple[ContextVar[Any], Any], ...]
    log_context: ContextVar[Any]
    message: ContextVar[Any]


def _variable(context: ContextRepo, key: str) -> ContextVar[Any]:
    """The variable `context.set_local(key, ...)` sets (created on first use, as FastStream does)."""
    token = context.set_local(key, None)
    token.var.reset(token)
    return token.var


class _InFlight(MultiLock):
    """FastStream's MultiLock (handlers in flight, awaited by a graceful stop) as a plain counter.

    MultiLock counts through an asyncio.Queue: a put, a get and a task_done per message. Same interface,
    same semantics (`wait_release` waits up to `timeout` for zero, and not at all without one).
    """

    __slots__ = ("_count", "_idle")

    def __init__(self) -> None:
        super().__init__()
        self._count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def acquire(self) -> None:
        self._count += 1
        if self._count == 1:
            self._idle.clear()

    def release(self) -> None:
        if self._count > 0:
            self._count -= 1
            if self._count == 0:
                self._idle.set()

    @property
    def qsize(self) -> int:
        return self._count

    @property
    def empty(self) -> bool:
        return self._count == 0

    async def wait_release(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 - MultiLock's signature
        if timeout:
            with anyio.move_on_after(timeout):
                await self._idle.wait()


def _acked_after(failure: BaseException, message: StreamMessage[Any] | None) -> bool:
    """Whether a handler failed and its message was acked all the same (AckPolicy.ACK): a failure the
    settlement does not count (a nack, a reject or a dead letter counts itself)."""
    if not isinstance(failure, Exception) or isinstance(failure, HandlerException):
        return False  # AckMessage and its kin are a handler's answer, not a failure
    return message is not None and message.committed is AckStatus.ACKED


class PulsarSubscriber(SubscriberUsecase["pulsar.Message"]):
    """Consumes one topic, a list of topics or a pattern through one consumer.

    A single receive task per consumer feeds the handlers; `receive()` is never cancelled (a cancelled
    receive loses the message it was about to return), the loop ends when the consumer closes.
    """

    _outer_config: PulsarBrokerConfig

    def __init__(
        self,
        config: PulsarSubscriberConfig,
        specification: PulsarSubscriberSpecification,
        calls: CallsCollection[pulsar.Message],
    ) -> None:
        parser = PulsarParser(settler=self)
        config.parser = parser.parse_message
        config.decoder = parser.decode_message
        super().__init__(config, cast("SubscriberSpecification[Any, Any]", specification), calls)
        self.config = config
        self._consumer: pa.Consumer | None = None
        self._receive_task: asyncio.Task[None] | None = None
        self._in_receive = False
        self._workers: KeyOrderedWorkers[pulsar.Message] | None = None
        self._inbox: asyncio.Queue[pulsar.Message] | None = None
        self._failures: weakref.WeakKeyDictionary[Any, BaseException] = weakref.WeakKeyDictionary()
        self._record_failure = partial(_RecordFailure, failures=self._failures)
        self._middleware_stack: tuple[tuple[Any, ...], tuple[Any, ...]] | None = None
        self._log_topic: str | None = None
        self._scope_vars: _ScopeVars | None = None
        self._measured: SubscriptionMetrics | None = None

    # --- what it consumes -------------------------------------------------------------------------

    @property
    def topics(self) -> list[str]:
        prefix = self._outer_config.prefix
        return [f"{prefix}{t}" for t in self.config.topics]

    @property
    def pattern(self) -> str | None:
        return f"{self._outer_config.prefix}{self.config.pattern}" if self.config.pattern else None

    @property
    def subscription(self) -> str:
        return self.config.subscription

    @property
    def dead_letter(self) -> DeadLetter | None:
        return self.config.dead_letter

    def dead_letter_topic(self, original_topic: str) -> str:
        dead_letter = self.config.dead_letter
        if dead_letter is not None and dead_letter.topic:
            return dead_letter.topic
        return f"{base_topic(original_topic)}-{self.subscription}-DLQ"

    @property
    @override
    def _broker_middlewares(self) -> Sequence[BrokerMiddleware[pulsar.Message]]:
        if self.config.dead_letter is None:
            return self._outer_config.broker_middlewares  # the error is only kept for dead letters
        return (*self._outer_config.broker_middlewares, self._record_failure)

    # --- lifecycle --------------------------------------------------------------------------------

    @override
    async def start(self) -> None:
        await super().start()
        self.lock = _InFlight()
        self._scope_vars = self._log_topic = self._middleware_stack = self._measured = None
        if self.calls:
            await self._subscribe()
            self._start_receiving(self._deliver_to_handlers())
        self._post_start()

    @override
    async def stop(self) -> None:
        """Finish in-flight handlers (graceful_timeout), then close the consumer, then the loops.

        Messages received meanwhile are left unacknowledged; Pulsar redelivers them once the consumer
        is closed.
        """
        await super().stop()
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            with contextlib.suppress(PulsarException):
                await consumer.close()
        task, self._receive_task = self._receive_task, None
        if task is not None and task is not asyncio.current_task():
            await self._end_receive_loop(task)
        if self._workers is not None:
            workers, self._workers = self._workers, None
            await workers.stop()
        self._inbox = None

    async def _end_receive_loop(self, task: asyncio.Task[None]) -> None:
        if self._in_receive:
            # Closing the consumer failed the pending receive: the loop ends by itself, uncancelled.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), 5)
        # Still running: a handler outlived graceful_timeout (its message stays unacked and comes back).
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    @override
    def _build_fastdepends_model(self) -> None:
        """FastStream's build of each handler's call (at start, and by TestPulsarBroker), then the direct call
        (`handler_call.py`) for every handler that FastDepends' per-message wrapper does nothing for."""
        super()._build_fastdepends_model()
        fd_config = self._outer_config.fd_config
        for item in self.calls:
            if (call := direct_call(item, fd_config)) is not None:
                internals.set_handler_call(item, call)

    async def _subscribe(self) -> None:
        if self._consumer is None:
            self._consumer = await self._outer_config.client.subscribe(**self._subscribe_kwargs())

    def _subscribe_kwargs(self) -> dict[str, Any]:
        config = self.config
        pattern = self.pattern
        topics = self.topics
        kwargs: dict[str, Any] = {
            "topic": pattern or (topics[0] if len(topics) == 1 else topics),
            "is_pattern_topic": pattern is not None,
            "subscription_name": config.subscription,
            "consumer_type": config.subscription_type,
            "initial_position": config.initial_position,
            "receiver_queue_size": config.receiver_queue_size,
            "negative_ack_redelivery_delay_ms": int(config.negative_ack_redelivery_delay * 1000),
        }
        if config.consumer_name:
            kwargs["consumer_name"] = config.consumer_name
        if config.key_shared_policy is not None:
            kwargs["key_shared_policy"] = config.key_shared_policy
        return kwargs

    def _deliver_to_handlers(self) -> Callable[[pulsar.Message], Awaitable[object]]:
        if self.config.max_workers <= 1:
            return self.consume
        # The pool holds at most as many messages as the client prefetches for this subscription.
        size = self.config.max_workers
        workers = self._workers = KeyOrderedWorkers(
            size, self.consume, max_in_flight=max(size, self.config.receiver_queue_size)
        )
        workers.start()
        return lambda raw: workers.put(str(raw.ordering_key() or raw.partition_key() or ""), raw)

    def _start_receiving(self, deliver: Callable[[pulsar.Message], Awaitable[object]]) -> None:
        consumer = self._consumer
        if consumer is not None and self._receive_task is None:
            self._receive_task = asyncio.create_task(self._receive_loop(consumer, deliver))

    async def _receive_loop(
        self, consumer: pa.Consumer, deliver: Callable[[pulsar.Message], Awaitable[object]]
    ) -> None:
        if NativeReceiver.supports(consumer):
            receive = NativeReceiver(consumer, poll=self.config.receiver_queue_size > 0).receive
        else:
            receive = consumer.receive
        while True:
            self._in_receive = True
            try:
                raw = await receive()
            except PulsarException as e:
                if e.error() == pulsar.Result.AlreadyClosed:
                    return
                self._log(logging.WARNING, f"receive failed, retrying: {e}", self.get_log_context(None))
                await asyncio.sleep(0.5)
                continue
            finally:
                self._in_receive = False
            await deliver(raw)

    # --- settlement (called by PulsarMessage.ack/nack/reject) --------------------------------------

    def _settling_consumer(self) -> pa.Consumer:
        if self._consumer is None:
            raise PulsarException(pulsar.Result.AlreadyClosed, "the subscriber's consumer is closed")
        return self._consumer

    def ack_now(self, message: PulsarMessage) -> bool:
        """`settle_ack` without a coroutine when the client only queues the ack (nearly always)."""
        consumer = self._consumer
        if consumer is None:
            return False  # settle_ack raises AlreadyClosed
        raw = message.raw_message
        if self.config.dead_letter is not None:  # failures are only recorded for dead letters
            self._failures.pop(raw, None)
        return acknowledge_now(consumer, raw)

    async def settle_ack(self, message: PulsarMessage) -> None:
        raw = message.raw_message
        if self.config.dead_letter is not None:  # failures are only recorded for dead letters
            self._failures.pop(raw, None)
        consumer = self._settling_consumer()
        if not acknowledge_now(consumer, raw):  # `_acknowledge` inline: one await less per message
            await consumer.acknowledge(raw)

    async def _acknowledge(self, raw: pulsar.Message) -> None:
        consumer = self._settling_consumer()
        if not acknowledge_now(consumer, raw):
            await consumer.acknowledge(raw)

    async def settle_nack(self, message: PulsarMessage) -> None:
        raw = message.raw_message
        error = self._failures.pop(raw, None)
        dead_letter = self.config.dead_letter
        if dead_letter is not None and raw.redelivery_count() >= dead_letter.max_redeliveries:
            await self._dead_letter(message, error, gave_up="nacked")
        else:
            with self._settling("nack", message):
                await self._settling_consumer().negative_acknowledge(raw)
            self._count_failure("nack")

    async def settle_reject(self, message: PulsarMessage) -> None:
        """Reject has no Pulsar equivalent: dead-letter at once if configured, else drop (ack)."""
        raw = message.raw_message
        error = self._failures.pop(raw, None)
        if self.config.dead_letter is not None:
            await self._dead_letter(message, error, gave_up="rejected")
        else:
            self._log(
                logging.WARNING, "rejected message dropped (no dead letter)", self.get_log_context(message)
            )
            with self._settling("reject", message):
                await self._acknowledge(raw)
            self._count_failure("reject")

    async def _dead_letter(
        self, message: PulsarMessage, error: BaseException | None, *, gave_up: str
    ) -> None:
        raw = message.raw_message
        consumer = self._settling_consumer()
        outcome = "reject" if gave_up == "rejected" else "dead_letter"
        with self._settling(outcome, message) as span:
            try:
                topic = self.dead_letter_topic(str(raw.topic_name()))
                command = dead_letter_command(
                    raw, error, subscription=self.subscription, topic=topic, gave_up=gave_up
                )
                await self._outer_config.producer.publish(command)
            except Exception as e:
                # Never lose it: a nack makes Pulsar redeliver, and the next failure tries the DLQ again.
                self._log(logging.ERROR, f"dead-lettering failed, nacking instead: {e!r}", exc_info=e)
                span.record_exception(e)
                await consumer.negative_acknowledge(raw)
                self._count_failure("nack")
                return
            await self._acknowledge(raw)
        self._count_failure(outcome)

    @contextlib.contextmanager
    def _settling(self, operation_name: str, message: PulsarMessage) -> Iterator[Span]:
        """The settlement's span under the message's process span (when spans are made)."""
        span = settle_span(message, operation_name, self.subscription)
        try:
            yield span
        finally:
            span.end()

    # --- metrics (metrics.py) -------------------------------------------------------------------------

    def _metrics(self) -> SubscriptionMetrics | None:
        """This subscriber's children of the bus metrics, resolved once it runs (not per message)."""
        if (measured := self._measured) is None:
            metrics = self._outer_config.bus_metrics
            if metrics is None:
                return None
            topic = self.pattern or ",".join(self.topics)
            measured = metrics.subscription(topic, self.config.subscription)
            if self.running:
                self._measured = measured
        return measured

    def _count_failure(self, outcome: str) -> None:
        if (measured := self._metrics()) is not None:
            measured.failed[outcome].inc()

    # --- the per-message path ------------------------------------------------------------------------

    @override
    async def process_message(self, msg: pulsar.Message) -> Response:
        """FastStream's `SubscriberUsecase.process_message` (0.7.8), step for step, minus its overhead.

        The same context keys are set and reset in the same order, the same middlewares are entered and
        exited in the same order with the same exception semantics (an `__aexit__` returning True
        suppresses the error for the outer ones, as in an AsyncExitStack), and the same handler, reply
        and publisher calls are made. What goes is the per-message AsyncExitStack/ExitStack, the
        generator context managers, the context scope objects (the same context variables are set
        directly, `_scope`), rebuilding the middleware factories for every message, and calls of the
        hooks a middleware inherits from BaseMiddleware, which only pass through (`_hooks_of`).
        `tests/unit/bus` pins the FastStream source this mirrors, so an upgrade that changes it fails
        loudly.
        """
        began = time.perf_counter()
        context = self._outer_config.context
        scope = self._scope()
        lock = self.lock
        lock.__enter__()
        handled: StreamMessage[Any] | None = None
        failure: BaseException | None = None
        try:
            tokens = [(var, var.set(value)) for var, value in scope.base]
            try:
                message_tokens: tuple[Token[Any], Token[Any]] | None = None
                entered: list[tuple[BaseMiddleware, _Hooks]] = []
                error: BaseException | None = None
                result: Response | None = None
                try:
                    for factory in self._middlewares_stack():
                        middleware = factory(msg, context=context)
                        hooks = _hooks_of(type(middleware))
                        if hooks.enters:
                            await middleware.__aenter__()
                        entered.append((middleware, hooks))
                    cache: dict[Any, Any] = {}
                    parsing_error: Exception | None = None
                    for h in self.calls.data:
                        try:
                            message = await h.is_suitable(msg, cache)
                        except Exception as e:
                            parsing_error = e
                            break
                        if message is not None:
                            handled = message
                            message_tokens = (
                                scope.log_context.set(self.get_log_context(message)),
                                scope.message.set(message),
                            )
                            result = ensure_response(await self._call_handler(h, message, entered))
                            if not result.correlation_id:
                                result.correlation_id = message.correlation_id
                            publishers = internals.handler_publishers(h)
                            if message.reply_to and not self._no_reply:
                                publishers = (*self._make_response_publisher(message), *publishers)
                            for p in publishers:
                                await internals.publish_with_middlewares(
                                    p,
                                    result.as_publish_command(),
                                    (m.publish_scope for m, hooks in entered[::-1] if hooks.publishes),
                                )
                            break
                    else:
                        raise SubscriberNotFound(f"There is no suitable handler for {msg=}")
                    if parsing_error is not None:
                        raise parsing_error
                except BaseException as e:
                    error = failure = e
                    result = None
                for middleware, hooks in reversed(entered):
                    if not hooks.exits:
                        continue  # BaseMiddleware's exit: returns False, raises nothing
                    try:
                        if error is None:
                            await middleware.__aexit__(None, None, None)
                        elif await middleware.__aexit__(type(error), error, error.__traceback__):
                            error = None  # suppressed, as an AsyncExitStack does
                    except BaseException as e:
                        e.__context__ = e.__context__ or error
                        error = e
                if message_tokens is not None:  # the message's scope ends after the middlewares exit
                    scope.message.reset(message_tokens[1])
                    scope.log_context.reset(message_tokens[0])
                if error is not None:
                    raise error
            finally:
                for var, token in reversed(tokens):
                    var.reset(token)
        finally:
            lock.__exit__(None, None, None)
            if (measured := self._metrics()) is not None:
                measured.seconds.observe(time.perf_counter() - began)
                measured.processed.inc()
                if failure is not None and _acked_after(failure, handled):
                    measured.failed["ack"].inc()
        # Without a result an error was raised and handled (suppressed) by some middleware.
        return result if result is not None else ensure_response(None)

    @staticmethod
    async def _call_handler(
        item: HandlerItem[Any], message: StreamMessage[Any], entered: list[tuple[BaseMiddleware, _Hooks]]
    ) -> Any:
        """`HandlerItem.call` with the middlewares' consume scopes, and the handler wrapper's `call_wrapped`,
        in one coroutine (FastStream 0.7.8; `tests/unit/bus` pins both sources)."""
        handler = item.handler
        call: Callable[[StreamMessage[Any]], Awaitable[Any]] = (
            handler.call_wrapped if handler.is_test else internals.wrapped_call(handler)
        )
        for middleware, hooks in reversed(entered):
            if hooks.consumes:
                call = partial(middleware.consume_scope, call)
        try:
            result = await call(message)
        except (IgnoredException, SystemExit):
            handler.trigger()
            raise
        except Exception as e:
            handler.trigger(error=e)
            raise
        handler.trigger(result=result)
        return result

    def _scope(self) -> _ScopeVars:
        """The context variables every message is handled in, and the values fixed once the subscriber runs.

        FastStream sets them through `ContextRepo.scopes` for every message (a scope object, a generator, a
        dictionary lookup per key); these are the very variables (`set_local` returns a token naming its
        variable), set and reset directly in the same order.
        """
        if (scope := self._scope_vars) is None or not self.running:
            outer = self._outer_config
            items = (("handler_", self), ("logger", outer.logger.logger.logger), *outer.extra_context.items())
            context = outer.context
            scope = _ScopeVars(
                base=tuple((_variable(context, key), value) for key, value in items),
                log_context=_variable(context, "log_context"),
                message=_variable(context, "message"),
            )
            if self.running:
                self._scope_vars = scope
        return scope

    def _middlewares_stack(self) -> tuple[Any, ...]:
        """FastStream's acknowledgement and critical-log middlewares, then the broker's; rebuilt only when
        the broker's middlewares change (add_middleware), not for every message.

        FastStream's acknowledgement middleware is replaced by its mirror with fewer awaits
        (`acknowledgement.py`). With logging off (`logger=None`) the critical-log middleware only calls a
        logger that drops everything, twice per message: it is left out then.
        """
        broker_middlewares = tuple(self._broker_middlewares)
        cached = self._middleware_stack
        if cached is None or cached[0] != broker_middlewares:
            built = [
                AcknowledgementFactory(m) if type(m) is AcknowledgementMiddleware else m
                for m in internals.build_middlewares_stack(self)
            ]
            if isinstance(self._outer_config.logger.logger, EmptyLoggerObject):
                built = [m for m in built if not isinstance(m, CriticalLogMiddleware)]
            cached = self._middleware_stack = (broker_middlewares, tuple(built))
        return cached[1]

    # --- pull API -----------------------------------------------------------------------------------

    async def _ensure_inbox(self) -> asyncio.Queue[pulsar.Message]:
        assert not self.calls, "You can't use `get_one` or iterate a subscriber that has handlers."
        if self._inbox is None:
            await self._subscribe()
            # One long-lived receive feeding a queue: waiting on the queue can time out safely.
            inbox = self._inbox = asyncio.Queue(maxsize=1)
            self._start_receiving(inbox.put)
        return self._inbox

    @override
    async def get_one(self, *, timeout: float = 5.0) -> PulsarMessage | None:
        inbox = await self._ensure_inbox()
        try:
            raw = await asyncio.wait_for(inbox.get(), timeout)
        except TimeoutError:
            return None
        return await self._parse_pulled(raw)

    @override
    async def __aiter__(self) -> AsyncIterator[PulsarMessage]:
        inbox = await self._ensure_inbox()
        while True:
            raw = await inbox.get()
            if (msg := await self._parse_pulled(raw)) is not None:
                yield msg

    async def _parse_pulled(self, raw: pulsar.Message) -> PulsarMessage | None:
        context = self._outer_config.context
        parser, decoder = self._get_parser_and_decoder()
        msg: PulsarMessage | None = await process_msg(  # type: ignore[assignment]
            msg=raw,
            middlewares=(m(raw, context=context) for m in self._outer_config.broker_middlewares),
            parser=parser,
            decoder=decoder,
        )
        return msg

    # --- replies and logs --------------------------------------------------------------------------

    @override
    def _make_response_publisher(self, message: StreamMessage[pulsar.Message]) -> Iterable[PublisherProto]:
        return (PulsarReplyPublisher(self._outer_config.producer, message.reply_to),)

    @override
    def get_log_context(self, message: StreamMessage[pulsar.Message] | None) -> dict[str, str]:
        if (topic := self._log_topic) is None or not self.running:
            topic = self._log_topic = self.pattern or ",".join(self.topics)  # fixed once running
        return {
            "topic": topic,
            "subscription": self.config.subscription,
            "message_id": getattr(message, "message_id", ""),
        }
