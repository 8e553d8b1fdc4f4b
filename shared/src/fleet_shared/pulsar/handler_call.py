"""A handler called as FastDepends calls it, without the per-message machinery a plain handler leaves unused.

FastStream wraps every handler twice: a decoding wrapper (`faststream._internal.di.config.
_unwrap_message_to_fast_depends_decorator`: the body decoded, passed as one argument or unpacked into several)
around FastDepends' `inject` wrapper (`fast_depends.use._wrap_inject`'s `injected_wrapper`, which runs
`CallModel.asolve`). For every message that opens an AsyncExitStack, runs an anyio task group when the handler
has custom fields, and calls the handler through `run_async`, which inspects again whether it is a coroutine
function and builds a `typing` alias to cast it: in the bus benchmark's profile, a quarter of the subscriber's
per-message cost, none of it doing anything for a handler without dependencies.

`direct_call` gives such a handler (the body as its one argument, `InlineContext` fields, no `Depends`,
FastDepends on) a call that does what those wrappers do, in the same order: the body decoded (cached
on the message), the same binding, validation and return-value cast (FastDepends' own generator,
`CallModel._solve`, does them), the `InlineContext` fields resolved in declaration order, the handler awaited.
Every other handler (one that takes the body unpacked into several arguments, too) keeps FastDepends'
wrapper. `tests/unit/bus` pins the sources this mirrors and runs both calls side by side.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

from fast_depends.core import CallModel
from fast_depends.utils import is_coroutine_callable

from . import internals
from .context import InlineContext

if TYPE_CHECKING:
    from faststream._internal.di import FastDependsConfig
    from faststream._internal.endpoint.subscriber.call_item import HandlerItem
    from faststream.message import StreamMessage

HandlerCall = Callable[["StreamMessage[Any]"], Awaitable[Any]]


def direct_call(item: HandlerItem[Any], fd_config: FastDependsConfig) -> HandlerCall | None:
    """The direct call for `item`'s handler, as FastStream set it up with `fd_config`; None when the handler
    needs something only FastDepends' wrapper does (dependencies, other custom fields, an unpacked body)."""
    model = item.dependant
    if not isinstance(model, CallModel) or not fd_config.use_fastdepends or fd_config.get_dependent:
        return None
    if model.dependencies or model.extra_dependencies or model.is_generator:
        return None
    if not is_coroutine_callable(model.call):
        return None
    custom = tuple(model.custom_fields.values())
    if not all(type(f) is InlineContext and not f.field for f in custom) or _unpacks_body(model):
        return None
    fields = cast("tuple[InlineContext, ...]", custom)
    # What FastStream's `apply_types(None, context__=fd_config.context)` passes to every call.
    call_extra = {"context__": fd_config.context}
    handler = model.call
    solve_args = internals.argument_solver(model)

    async def call(message: StreamMessage[Any]) -> Any:
        # decode_wrapper + injected_wrapper + CallModel.asolve, for a handler taking the body as its one
        # argument and a model without dependencies: no exit stack to fill, no task group to run (no
        # field-style custom fields), the handler a coroutine function.
        solving = solve_args(await message.decode(), cache_dependencies={}, **call_extra)
        try:
            _args, kwargs = next(solving)
        except StopIteration as cached:  # pragma: no cover - only with a shared dependency cache
            return cached.value
        for field in fields:
            kwargs = await field.use(**kwargs)
        final_args, final_kwargs = solving.send(kwargs)
        response = await handler(*final_args, **final_kwargs)
        try:
            solving.send(response)
        except StopIteration as done:
            return done.value
        raise AssertionError("unreachable")  # pragma: no cover - as in FastDepends

    return call


def _unpacks_body(model: CallModel) -> bool:
    """Whether FastStream unpacks the decoded body into the arguments (several, or `*args`)."""
    params = model.flat_params
    if len(params) > 1:
        return True
    option = next(iter(params), None)
    return option is not None and option.kind is inspect.Parameter.VAR_POSITIONAL
