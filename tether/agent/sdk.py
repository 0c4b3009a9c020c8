"""The command SDK: ``Agent`` (a registry of commands) and ``Context``.

Handlers follow Cortex XSOAR's convention: the task's ``args`` (a JSON object) is the first
positional parameter, and the return value (JSON-serialisable) is the result::

    agent = Agent()

    @agent.command("disk_usage")
    async def disk_usage(args: dict, *, ctx: Context) -> dict:
        await ctx.progress(50, "half way")
        return {"free": 123}

A handler may be a coroutine function (awaited on the agent's event loop) or a plain
function (run in a worker thread with ``asyncio.to_thread``, so it may block). ``ctx`` is
passed only to handlers that declare it (a parameter named ``ctx``, or ``**kwargs``).
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from tether.protocol import Progress
from tether.protocol.alerts import AlertBody, parse_alert
from tether.protocol.frames import MAX_PROGRESS_MESSAGE

F = TypeVar("F", bound=Callable[..., Any])

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")
"""Command names: no whitespace, because ``"file_get --path x"`` is split on spaces."""


@dataclass(frozen=True, slots=True)
class Command:
    """One registered handler and how to call it (decided once, at registration)."""

    name: str
    function: Callable[..., Any]
    is_async: bool
    takes_ctx: bool


def check_command_name(name: object) -> str:
    """``name`` if it is a valid command name; else a ``ValueError`` saying the rule."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"invalid command name {name!r}: use letters, digits, '_', '.', '-'")
    return name


def _is_async(function: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(function):
        return True
    call = getattr(function, "__call__", None)  # noqa: B004 -- async callable objects
    return call is not None and inspect.iscoroutinefunction(call)


def _takes_ctx(function: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature: call them plainly
        return False
    for p in parameters:
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            return True
        if p.name == "ctx" and p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
            return True
    return False


class Agent:
    """A set of named commands. Several sets can be served together (see :meth:`include`)."""

    def __init__(self, name: str = "") -> None:
        self.name = name
        self._commands: dict[str, Command] = {}
        self.config_handlers: list[Callable[[dict[str, Any]], Any]] = []
        """Called with the agent's whole configuration each time tetherd gives it a new one
        (:meth:`on_config`)."""

    def __repr__(self) -> str:
        return f"Agent({self.name!r}, commands={sorted(self._commands)})"

    def __contains__(self, name: object) -> bool:
        return name in self._commands

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._commands))

    def __len__(self) -> int:
        return len(self._commands)

    @property
    def commands(self) -> Mapping[str, Command]:
        """Read-only view: command name -> :class:`Command`."""
        return self._commands

    def add_command(self, name: str, function: Callable[..., Any]) -> Command:
        """Register ``function`` under ``name``; a name may be registered once per Agent."""
        check_command_name(name)
        if name in self._commands:
            raise ValueError(f"command {name!r} is already registered on {self!r}")
        if not callable(function):
            raise TypeError(f"handler for {name!r} is not callable: {function!r}")
        command = Command(name, function, _is_async(function), _takes_ctx(function))
        self._commands[name] = command
        return command

    @overload
    def command(self, name: F, /) -> F: ...

    @overload
    def command(self, name: str | None = None, /) -> Callable[[F], F]: ...

    def command(self, name: str | F | None = None, /) -> F | Callable[[F], F]:
        """Decorator: ``@agent.command("name")``, ``@agent.command()`` or ``@agent.command``
        (the last two use the function's ``__name__``). Returns the function unchanged."""
        if callable(name):
            self.add_command(name.__name__, name)
            return name

        def register(function: F) -> F:
            self.add_command(name or function.__name__, function)
            return function

        return register

    def on_config(self, function: F) -> F:
        """Decorator: ``@agent.on_config`` registers ``function(config)``, called (awaited if
        it is a coroutine function; a plain one runs in a worker thread) with every key the
        agent runs with (defaults included, ``app.*`` keys for this code) whenever tetherd
        gives the agent a new configuration, and once it is applied. An exception refuses the
        configuration: the agent keeps the one it had and tells tetherd why
        (``tetherctl config show``)."""
        if not callable(function):
            raise TypeError(f"on_config handler is not callable: {function!r}")
        self.config_handlers.append(function)
        return function

    def include(self, other: Agent, *, replace: bool = False) -> None:
        """Serve ``other``'s commands too. A clash is an error unless ``replace``."""
        for cmd_name, cmd in other._commands.items():
            if cmd_name in self._commands and not replace:
                raise ValueError(f"command {cmd_name!r} is registered on both {self!r} and {other!r}")
            self._commands[cmd_name] = cmd
        self.config_handlers += [h for h in other.config_handlers if h not in self.config_handlers]


_EVENT_LOCK = threading.Lock()


class ErrorResult(BaseException):
    """Raised to end a run as failed with ``message`` as its error, however deep in the
    handler (XSOAR's ``return_error``, which exits the script there). A ``BaseException``,
    as XSOAR's ``SystemExit``: an ``except Exception`` in the handler does not swallow it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def argToBoolean(value: Any) -> bool:
    """CommonServerPython ``argToBoolean``: a bool as is; ``true``/``yes`` and
    ``false``/``no`` in any case; anything else is a ``ValueError``."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        if value.lower() in ("true", "yes"):
            return True
        if value.lower() in ("false", "no"):
            return False
        raise ValueError("Argument does not contain a valid boolean-like value")
    raise ValueError("Argument is neither a string nor a boolean")


class Context:
    """What a running handler may ask of the agent: report progress, raise alerts, notice
    cancellation.

    ``cancelled`` is a :class:`threading.Event`: the daemon cancelled this delivery (or the
    agent is stopping). Async handlers are also cancelled with ``CancelledError``; sync
    handlers cannot be interrupted, so they should poll ``ctx.cancelled.is_set()`` and
    return early. Whatever a cancelled handler returns is discarded.

    ``run`` is which run of the delivery this is: 1, then 2, 3 ... when a polling command
    scheduled its next run (:mod:`tether.agent.polling`); every run has the same
    ``delivery_id``, and ``command`` is the name the command is run under.
    """

    __slots__ = ("_alert", "_cancelled", "_emit", "_loop", "args", "command", "delivery_id", "poll_deadline", "poll_started_at",
                 "priority", "run", "task_id")

    def __init__(
        self,
        *,
        delivery_id: int,
        task_id: int,
        command: str,
        priority: int = 1,
        run: int = 1,
        emit: Callable[[Progress], None] | None = None,
        alert: Callable[[AlertBody, int], None] | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        args: dict[str, Any] | None = None,
        poll_started_at: float = 0.0,
        poll_deadline: float = 0.0,
    ) -> None:
        self.delivery_id = delivery_id
        self.task_id = task_id
        self.command = command
        self.priority = priority
        self.run = run
        self.args: dict[str, Any] = {} if args is None else args
        """The args the handler was called with (``demisto.args()`` of :mod:`tether.agent.xsoar`)."""
        self.poll_started_at = poll_started_at
        """For a later run of a polling sequence: when it started and when it times out
        (0: not known, e.g. the agent restarted since the run was pushed)."""
        self.poll_deadline = poll_deadline
        self._cancelled: threading.Event | None = None  # made on first use: most runs never look
        self._emit = emit
        self._alert = alert
        self._loop = loop

    @property
    def cancelled(self) -> threading.Event:
        event = self._cancelled
        if event is None:
            with _EVENT_LOCK:  # a sync handler's thread and the loop may both ask first
                if self._cancelled is None:
                    self._cancelled = threading.Event()
                event = self._cancelled
        return event

    def is_cancelled(self) -> bool:
        """``ctx.cancelled.is_set()``."""
        event = self._cancelled
        return event is not None and event.is_set()

    def __repr__(self) -> str:
        return f"Context(delivery_id={self.delivery_id}, run={self.run}, command={self.command!r})"

    def _frame(self, percent: float | None, message: str) -> Progress:
        if percent is not None and not 0 <= percent <= 100:
            raise ValueError(f"percent must be between 0 and 100, got {percent}")
        if len(message) > MAX_PROGRESS_MESSAGE:
            message = message[:MAX_PROGRESS_MESSAGE - 3] + "..."
        return Progress(delivery_id=self.delivery_id, percent=percent, message=message, run=self.run)

    async def progress(self, percent: float | None = None, message: str = "") -> None:
        """Report how far the command got. Best effort: dropped while disconnected."""
        frame = self._frame(percent, message)
        if self._emit is not None:
            self._emit(frame)

    def progress_threadsafe(self, percent: float | None = None, message: str = "") -> None:
        """:meth:`progress` for sync handlers (callable from any thread, never blocks)."""
        frame = self._frame(percent, message)
        if self._emit is None or self._loop is None:
            return
        try:
            self._loop.call_soon_threadsafe(self._emit, frame)
        except RuntimeError:
            # The loop is closed: the agent stopped while this thread kept running. A
            # progress report has nobody to go to; the handler's result is discarded too.
            pass

    async def alert(self, *, kind: str, name: str, **fields: Any) -> None:
        """Raise an alert (:mod:`tether.protocol.alerts`: ``kind`` and ``name``, optional
        ``path``, ``hash``, ``severity``, ``message``, ``details``). It is journaled before
        this returns and sent until tetherd takes it, so it survives a lost session or a
        restart; tetherd keeps each distinct alert once, with a count. A bad field raises
        ``ValueError`` saying which."""
        body = parse_alert({"kind": kind, "name": name, **fields})
        if self._alert is not None:
            self._alert(body, self.delivery_id)

    def alert_threadsafe(self, *, kind: str, name: str, **fields: Any) -> None:
        """:meth:`alert` for sync handlers (callable from any thread; it does not wait for
        the journal: an alert raised just before the agent dies may be lost)."""
        body = parse_alert({"kind": kind, "name": name, **fields})
        if self._alert is None or self._loop is None:
            return
        try:
            self._loop.call_soon_threadsafe(self._alert, body, self.delivery_id)
        except RuntimeError:
            pass  # the loop is closed: the agent stopped while this thread kept running


CURRENT_RUN: contextvars.ContextVar[Context | None] = contextvars.ContextVar("tether_current_run", default=None)
"""The run under way in this context: the runner sets it around each handler (a sync
handler's thread gets a copy), so code deep in a command can ask which run it is
(``tether.agent.xsoar``'s ``demisto.args()``)."""
