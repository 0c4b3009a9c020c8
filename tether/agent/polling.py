"""Polling commands: a run that asks to be run again (Cortex XSOAR "Scheduled Commands").

A handler that returns a :class:`ScheduledCommand` ends its run with a *schedule result*.
The daemon holds the wait on its timer wheel -- no worker is used and nothing waits on the
agent -- and then pushes the same delivery again as run 2, 3 ... (``ctx.run``). The
sequence ends when a run returns anything else (done), raises (error), or when its timeout
passes (the daemon writes that error itself). The interval "will never be less than 10
seconds": a shorter one is accepted here and raised by the daemon, which says so in the
run's history (the floor is a daemon setting, :mod:`tether.protocol.polling`).

:func:`polling_function` saves the boilerplate, with XSOAR's names and defaults::

    @agent.command("sandbox.report")
    @polling_function(interval=60, timeout=1800)
    def report(args: dict) -> PollResult:
        status = sandbox.status(args["id"])
        return PollResult(status, continue_to_poll=lambda s: s["state"] != "done")

``@agent.command`` goes on top: it registers what ``polling_function`` returns.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from typing import Any, overload

from tether.protocol.polling import InvalidSchedule, plan_next_run

from .sdk import Context, _is_async, _takes_ctx, check_command_name

Handler = Callable[..., Any]

DEFAULT_INTERVAL = 30
"""XSOAR ``polling_function``: seconds until the next run."""
DEFAULT_TIMEOUT = 600
"""XSOAR ``polling_function``: how long the whole sequence may poll, in seconds."""
DEFAULT_POLL_MESSAGE = "Fetching Results:"

_TRUE_WORDS = frozenset({"true", "yes", "1"})


@dataclass(frozen=True, slots=True)
class PollResult:
    """What a :func:`polling_function` handler returns (XSOAR ``PollResult``).

    ``response`` is the result when polling stops. ``continue_to_poll`` is a bool, or a
    function called with ``response`` that says whether to poll again. The next run gets
    ``args_for_next_run``, or this run's args when it is ``None``. ``partial_result`` is
    the output of a run that polls again (``None``: no output).
    """

    response: Any
    continue_to_poll: bool | Callable[[Any], object] = False
    args_for_next_run: dict[str, Any] | None = None
    partial_result: Any = None

    def __post_init__(self) -> None:
        if not isinstance(self.continue_to_poll, bool) and not callable(self.continue_to_poll):
            raise ValueError(
                f"PollResult: continue_to_poll must be a bool or a function of the response, "
                f"not {type(self.continue_to_poll).__name__}")
        if self.args_for_next_run is not None and not isinstance(self.args_for_next_run, dict):
            raise ValueError(
                f"PollResult: args_for_next_run must be a dict or None, not {type(self.args_for_next_run).__name__}")

    def should_poll(self) -> bool:
        """``continue_to_poll``, evaluated (a function is called with ``response``)."""
        if isinstance(self.continue_to_poll, bool):
            return self.continue_to_poll
        decision = self.continue_to_poll(self.response)
        if inspect.isawaitable(decision):
            if inspect.iscoroutine(decision):
                decision.close()  # never awaited: close it rather than leak a warning
            raise TypeError("PollResult: continue_to_poll must return a bool, not an awaitable "
                            "(use a plain function, or decide in the handler and pass a bool)")
        return bool(decision)


@dataclass(frozen=True, slots=True)
class ScheduledCommand:
    """Returned by a handler: end this run with a schedule result (XSOAR ``ScheduledCommand``).

    ``command`` runs again after ``next_run_in_seconds`` with ``args`` (``None``: this
    run's args as delivered), as the next run of the same delivery. ``timeout_in_seconds``
    bounds the whole sequence, counted by the daemon from its first schedule (``None``:
    the daemon's default, 600 s). ``partial_result`` is this run's output (it must be
    JSON-serialisable, like any output); ``poll_message`` goes in the run's history entry.
    """

    command: str
    next_run_in_seconds: float
    args: dict[str, Any] | None = None
    timeout_in_seconds: float | None = None
    _: KW_ONLY
    partial_result: Any = None
    poll_message: str = ""

    def __post_init__(self) -> None:
        try:
            check_command_name(self.command)
            plan_next_run(self.next_run_in_seconds, self.timeout_in_seconds, floor=0.0)
        except ValueError as exc:
            raise InvalidSchedule(f"ScheduledCommand: {exc}") from None
        if self.args is not None and not isinstance(self.args, dict):
            raise InvalidSchedule(f"ScheduledCommand: args must be a dict or None, not {type(self.args).__name__}")
        if not isinstance(self.poll_message, str):
            raise InvalidSchedule(f"ScheduledCommand: poll_message must be a str, not {type(self.poll_message).__name__}")


def polling_arg_set(value: object) -> bool:
    """Whether an arg asks for polling: ``True``, ``1``, or ``"true"``/``"yes"``/``"1"`` in
    any case (XSOAR ``argToBoolean``); anything else, missing included, does not."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value == 1
    if isinstance(value, str):
        return value.strip().lower() in _TRUE_WORDS
    return False


@dataclass(frozen=True, slots=True)
class _Polling:
    """One :func:`polling_function`'s settings, checked at decoration time."""

    name: str | None
    interval: float
    timeout: float | None
    poll_message: str
    polling_arg_name: str
    requires_polling_arg: bool

    def polls(self, args: dict[str, Any]) -> bool:
        return not self.requires_polling_arg or polling_arg_set(args.get(self.polling_arg_name))

    def outcome(self, result: object, args: dict[str, Any], ctx: Context | None, polls: bool) -> Any:
        """The handler's return value: its ``response``, or a schedule of the next run."""
        if not isinstance(result, PollResult):
            raise TypeError(f"a polling_function handler must return a PollResult, not {type(result).__name__}")
        if not polls or not result.should_poll():
            return result.response
        if self.name is not None:
            command = self.name
        elif ctx is not None:
            command = ctx.command
        else:
            raise TypeError("polling_function without a name needs ctx (the command it runs under) to poll")
        base = args if result.args_for_next_run is None else result.args_for_next_run
        return ScheduledCommand(
            command, self.interval, {**base, self.polling_arg_name: True}, self.timeout,
            partial_result=result.partial_result, poll_message=self.poll_message,
        )


@overload
def polling_function(name: Handler, /) -> Handler: ...


@overload
def polling_function(
    name: str | None = None,
    interval: float = DEFAULT_INTERVAL,
    timeout: float | None = DEFAULT_TIMEOUT,
    poll_message: str = DEFAULT_POLL_MESSAGE,
    polling_arg_name: str = "polling",
    requires_polling_arg: bool = True,
) -> Callable[[Handler], Handler]: ...


def polling_function(
    name: str | Handler | None = None,
    interval: float = DEFAULT_INTERVAL,
    timeout: float | None = DEFAULT_TIMEOUT,
    poll_message: str = DEFAULT_POLL_MESSAGE,
    polling_arg_name: str = "polling",
    requires_polling_arg: bool = True,
) -> Handler | Callable[[Handler], Handler]:
    """Decorator for a handler that polls (XSOAR ``polling_function``); it takes ``args``
    first and returns a :class:`PollResult`.

    With ``requires_polling_arg`` (the default) a run polls only if
    ``args[polling_arg_name]`` says so (:func:`polling_arg_set`); otherwise the handler
    runs once and its ``response`` is the result. A run that polls and whose
    ``continue_to_poll`` holds schedules the next run of ``name`` (default: the command
    it runs under) in ``interval`` seconds, with ``args_for_next_run`` (or this run's
    args) plus ``polling_arg_name: True``; ``timeout`` bounds the whole sequence.

    The decorated handler stays async if it was; it gets ``ctx`` only if it declares it.
    """
    if callable(name):  # bare @polling_function
        return polling_function()(name)
    if name is not None:
        check_command_name(name)
    try:
        plan_next_run(interval, timeout, floor=0.0)
    except InvalidSchedule as exc:
        message = str(exc).replace("next_run_in_seconds", "interval").replace("timeout_in_seconds", "timeout")
        raise InvalidSchedule(f"polling_function: {message}") from None
    if not isinstance(poll_message, str):
        raise ValueError(f"polling_function: poll_message must be a str, not {type(poll_message).__name__}")
    if not isinstance(polling_arg_name, str) or not polling_arg_name:
        raise ValueError(f"polling_function: polling_arg_name must be a non-empty str, not {polling_arg_name!r}")
    policy = _Polling(name, interval, timeout, poll_message, polling_arg_name, bool(requires_polling_arg))

    def decorate(function: Handler) -> Handler:
        if not callable(function):
            raise TypeError(f"polling_function decorates a handler, not {function!r}")
        pass_ctx = _takes_ctx(function)
        wrapper: Handler
        if _is_async(function):
            async def poll_async(args: dict[str, Any], *, ctx: Context | None = None) -> Any:
                polls = policy.polls(args)
                result = await (function(args, ctx=ctx) if pass_ctx else function(args))
                return policy.outcome(result, args, ctx, polls)

            wrapper = poll_async
        else:
            def poll_sync(args: dict[str, Any], *, ctx: Context | None = None) -> Any:
                polls = policy.polls(args)
                result = function(args, ctx=ctx) if pass_ctx else function(args)
                return policy.outcome(result, args, ctx, polls)

            wrapper = poll_sync
        return _named_like(wrapper, function)

    return decorate


def _named_like(wrapper: Handler, function: Handler) -> Handler:
    """``wrapper`` with ``function``'s name, docstring and ``__wrapped__``, but its own
    signature: the runner reads the signature to decide whether to pass ctx, and the
    wrapper always takes it, whatever the wrapped handler does."""
    own_signature = inspect.signature(wrapper)
    functools.update_wrapper(wrapper, function)
    wrapper.__signature__ = own_signature  # type: ignore[attr-defined]
    return wrapper
