"""Polling commands: a run that asks to be run again (Cortex XSOAR "Scheduled Commands").

A handler that returns a :class:`ScheduledCommand` ends its run with a *schedule result*.
The daemon holds the wait on its timer wheel -- no worker is used and nothing waits on the
agent -- and then pushes the same delivery again as run 2, 3 ... (``ctx.run``). The
sequence ends when a run returns anything else (done), raises or returns an error entry
(error), or when its timeout passes (the daemon writes that error itself). The interval
"will never be less than 10 seconds": a shorter one, zero or negative included, is
accepted here and raised by the daemon, which says so in the run's history (the floor is a
daemon setting, :mod:`tether.protocol.polling`), as XSOAR's ``ScheduledCommand`` raises it
to 10 s.

:func:`polling_function` saves the boilerplate, with XSOAR's names, defaults and behaviour
(CommonServerPython ``polling_function``)::

    @agent.command("sandbox.report")
    @polling_function("sandbox.report", interval=60, timeout=1800)
    def report(args: dict, client) -> PollResult:
        status = client.status(args["id"])
        return PollResult(status, continue_to_poll=lambda: status["state"] != "done")

``@agent.command`` goes on top: it registers what ``polling_function`` returns. The same
names, for XSOAR code, are in :mod:`tether.agent.xsoar`.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from typing import Any, overload

from tether.protocol.polling import MAX_SECONDS, InvalidSchedule

from .sdk import CURRENT_RUN, Context, _is_async, _takes_ctx, argToBoolean, check_command_name

Handler = Callable[..., Any]

DEFAULT_INTERVAL = 30
"""XSOAR ``polling_function``: seconds until the next run."""
DEFAULT_TIMEOUT = 600
"""XSOAR ``polling_function``: how long the whole sequence may poll, in seconds."""
DEFAULT_POLL_MESSAGE = "Fetching Results:"

Seconds = float | Callable[[dict[str, Any]], Any]
"""A number of seconds, or a function of the run's args that gives one (XSOAR integrations
read ``interval``/``timeout`` from ``demisto.args()`` when the decorator is built)."""


def _takes_no_argument(function: Callable[..., Any]) -> bool:
    """Whether ``function`` can be called with no argument (XSOAR's ``continue_to_poll()``),
    rather than with the response (tether's first form)."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return True
    return all(p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in parameters)


@dataclass(slots=True)
class PollResult:
    """What a :func:`polling_function` handler returns (XSOAR ``PollResult``).

    ``response`` is the result when polling stops. ``continue_to_poll`` is a bool, or a
    function that says whether to poll again: called with no argument, as in XSOAR
    (``lambda: not done(client, key)``), or -- if it takes a parameter -- with ``response``.
    The next run gets ``args_for_next_run``, or this run's args when it is empty (XSOAR's
    ``or``). ``partial_result`` is the output of a run that polls again.
    """

    response: Any
    continue_to_poll: bool | Callable[..., object] = False
    args_for_next_run: dict[str, Any] | None = None
    partial_result: Any = None

    def __post_init__(self) -> None:
        if not isinstance(self.continue_to_poll, bool) and not callable(self.continue_to_poll):
            raise ValueError(
                f"PollResult: continue_to_poll must be a bool or a function, "
                f"not {type(self.continue_to_poll).__name__}")
        if self.args_for_next_run is not None and not isinstance(self.args_for_next_run, dict):
            raise ValueError(
                f"PollResult: args_for_next_run must be a dict or None, not {type(self.args_for_next_run).__name__}")

    def should_poll(self) -> bool:
        """``continue_to_poll``, evaluated (see the class doc for how a function is called)."""
        if isinstance(self.continue_to_poll, bool):
            return self.continue_to_poll
        predicate = self.continue_to_poll
        decision = predicate() if _takes_no_argument(predicate) else predicate(self.response)
        if inspect.isawaitable(decision):
            if inspect.iscoroutine(decision):
                decision.close()  # never awaited: close it rather than leak a warning
            raise TypeError("PollResult: continue_to_poll must return a bool, not an awaitable "
                            "(use a plain function, or decide in the handler and pass a bool)")
        return bool(decision)


def _finite(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidSchedule(f"ScheduledCommand: {name} must be a finite number of seconds, not {value!r}")
    if value > MAX_SECONDS:
        raise InvalidSchedule(f"ScheduledCommand: {name} of {value:g} s is more than a year; "
                              f"give at most {MAX_SECONDS:g} s")
    return float(value)


@dataclass(frozen=True, slots=True)
class ScheduledCommand:
    """Returned by a handler: end this run with a schedule result (XSOAR ``ScheduledCommand``).

    ``command`` runs again after ``next_run_in_seconds`` with ``args`` (``None``: this
    run's args as delivered), as the next run of the same delivery; an interval below the
    daemon's floor (10 s by default), zero and negative ones included, is raised to it, and
    the run's history says so. ``timeout_in_seconds`` bounds the whole sequence, counted
    from its first schedule (``None`` or ``0``: the default, 600 s). ``items_remaining`` is
    shown in the run's history entry. ``partial_result`` is this run's output (it must be
    JSON-serialisable, like any output); ``poll_message`` goes in the run's history entry.
    """

    command: str
    next_run_in_seconds: float
    args: dict[str, Any] | None = None
    timeout_in_seconds: float | None = None
    items_remaining: int | None = 0
    _: KW_ONLY
    partial_result: Any = None
    poll_message: str = ""

    def __post_init__(self) -> None:
        try:
            check_command_name(self.command)
        except ValueError as exc:
            raise InvalidSchedule(f"ScheduledCommand: {exc}") from None
        _finite("next_run_in_seconds", self.next_run_in_seconds)
        if self.timeout_in_seconds:
            timeout = _finite("timeout_in_seconds", self.timeout_in_seconds)
            if timeout < 0:
                raise InvalidSchedule(f"ScheduledCommand: timeout_in_seconds must be more than 0 seconds, "
                                      f"not {timeout:g}")
        if self.args is not None and not isinstance(self.args, dict):
            raise InvalidSchedule(f"ScheduledCommand: args must be a dict or None, not {type(self.args).__name__}")
        if not isinstance(self.poll_message, str):
            raise InvalidSchedule(f"ScheduledCommand: poll_message must be a str, not {type(self.poll_message).__name__}")
        if self.items_remaining is not None and (isinstance(self.items_remaining, bool)
                                                 or not isinstance(self.items_remaining, int)):
            raise InvalidSchedule(f"ScheduledCommand: items_remaining must be a whole number, "
                                  f"not {self.items_remaining!r}")

    @staticmethod
    def raise_error_if_not_supported() -> bool:
        """XSOAR: raises on servers older than 6.2; every tether daemon supports it."""
        return True

    @staticmethod
    def supports_polling() -> bool:
        """XSOAR: whether the server supports scheduled commands; always on tether."""
        return True


def polling_arg_set(value: object, name: str = "polling") -> bool:
    """Whether the polling arg asks for polling, read as XSOAR's ``argToBoolean``: booleans,
    and ``true``/``false``/``yes``/``no`` in any case; missing means no. Anything else is a
    ``ValueError`` naming the arg (the run fails with it, rather than silently not polling)."""
    if value is None:
        return False
    try:
        return argToBoolean(value)
    except ValueError as exc:
        raise ValueError(f"the {name!r} arg must be true, false, yes or no: {exc} (got {value!r})") from None


def _check_seconds(name: str, value: object) -> None:
    """A setting that cannot be honoured is refused when the handler is declared; a
    function of the args is checked when it is called (the run fails with the reason)."""
    if callable(value) or value is None:
        return
    try:
        seconds = _finite(name, value)
    except InvalidSchedule as exc:
        raise InvalidSchedule(str(exc).replace("ScheduledCommand:", "polling_function:")) from None
    if name == "timeout" and seconds < 0:
        raise InvalidSchedule(f"polling_function: timeout must be more than 0 seconds, not {seconds:g}")


def _seconds(value: Seconds | None, args: dict[str, Any], name: str) -> Any:
    """The setting for this run: a function of the args is called with them."""
    if callable(value):
        try:
            return value(args)
        except Exception as exc:
            raise InvalidSchedule(f"polling_function: the {name} function failed: {type(exc).__name__}: {exc}") from None
    return value


@dataclass(frozen=True, slots=True)
class _Polling:
    """One :func:`polling_function`'s settings, checked at decoration time."""

    name: str | None
    interval: Seconds
    timeout: Seconds | None
    poll_message: str
    polling_arg_name: str
    requires_polling_arg: bool

    def polls(self, args: dict[str, Any]) -> bool:
        return not self.requires_polling_arg or polling_arg_set(args.get(self.polling_arg_name), self.polling_arg_name)

    def outcome(self, result: object, args: dict[str, Any], ctx: Context | None, polls: bool) -> Any:
        """The handler's return value: its ``response``, or a schedule of the next run."""
        if not isinstance(result, PollResult):
            raise TypeError(f"a polling_function handler must return a PollResult, not {type(result).__name__}")
        if not polls or not result.should_poll():
            return result.response
        run = ctx or CURRENT_RUN.get()
        if self.name is not None:
            command = self.name
        elif run is not None:
            command = run.command
        else:
            raise TypeError("polling_function without a name needs ctx (the command it runs under) to poll")
        next_args = dict(result.args_for_next_run or args)
        next_args["hide_polling_output"] = True  # as XSOAR's: later entries show no poll message
        interval = _seconds(self.interval, args, "interval")
        timeout = _seconds(self.timeout, args, "timeout")
        return ScheduledCommand(
            command, DEFAULT_INTERVAL if interval is None else interval, next_args, timeout or None,
            partial_result=result.partial_result,
            poll_message="" if args.get("hide_polling_output") else self.poll_message,
        )


@overload
def polling_function(name: Handler, /) -> Handler: ...


@overload
def polling_function(
    name: str | None = None,
    interval: Seconds = DEFAULT_INTERVAL,
    timeout: Seconds | None = DEFAULT_TIMEOUT,
    poll_message: str = DEFAULT_POLL_MESSAGE,
    polling_arg_name: str = "polling",
    requires_polling_arg: bool = True,
) -> Callable[[Handler], Handler]: ...


def polling_function(
    name: str | Handler | None = None,
    interval: Seconds = DEFAULT_INTERVAL,
    timeout: Seconds | None = DEFAULT_TIMEOUT,
    poll_message: str = DEFAULT_POLL_MESSAGE,
    polling_arg_name: str = "polling",
    requires_polling_arg: bool = True,
) -> Handler | Callable[[Handler], Handler]:
    """Decorator for a handler that polls (XSOAR ``polling_function``); it takes ``args``
    first and returns a :class:`PollResult`. The decorated function forwards any further
    arguments, as XSOAR's does (``inner(args, *arguments, **kwargs)``): ``cmd(args,
    client)``, ``functools.partial(cmd, client=client)`` and closures all work.

    With ``requires_polling_arg`` (the default) a run polls only if
    ``args[polling_arg_name]`` says so (:func:`polling_arg_set`); otherwise the handler
    runs once and its ``response`` is the result. A run that polls and whose
    ``continue_to_poll`` holds schedules the next run of ``name`` (default: the command it
    runs under) in ``interval`` seconds, with ``args_for_next_run`` (or this run's args)
    plus ``hide_polling_output: true``, as XSOAR's; ``timeout`` bounds the whole sequence.
    ``interval`` and ``timeout`` may be functions of the run's args (XSOAR integrations
    read them from ``demisto.args()``). A run whose args carry ``hide_polling_output``
    shows no poll message.

    The decorated handler stays async if it was; it gets ``ctx`` only if it declares it.
    """
    if callable(name):  # bare @polling_function
        return polling_function()(name)
    if name is not None:
        check_command_name(name)
    _check_seconds("interval", interval)
    _check_seconds("timeout", timeout)
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
            async def poll_async(args: dict[str, Any], *arguments: Any, ctx: Context | None = None,
                                 **kwargs: Any) -> Any:
                polls = policy.polls(args)
                if pass_ctx:
                    kwargs["ctx"] = ctx
                result = await function(args, *arguments, **kwargs)
                return policy.outcome(result, args, ctx, polls)

            wrapper = poll_async
        else:
            def poll_sync(args: dict[str, Any], *arguments: Any, ctx: Context | None = None, **kwargs: Any) -> Any:
                polls = policy.polls(args)
                if pass_ctx:
                    kwargs["ctx"] = ctx
                result = function(args, *arguments, **kwargs)
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
