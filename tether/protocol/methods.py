"""Every console RPC method, declared once: its name, params, result, least role and events.

A :class:`Method` is the one declaration a console method has. Each side binds its
implementation to it through a :class:`Bindings`, which refuses a second binding and names
the methods left without one (a test asks each side for none): the daemon its handler
(``@handler(methods.TASK_CREATE)`` in :mod:`tether.daemon.rpc`), tetherctl the command that
calls it (``@command("task", methods.TASK_CREATE)`` in :mod:`tether.console.plan`) and its
renderer (``@renders(methods.TASK_CREATE)`` in :mod:`tether.console.results`).
``docs/protocol.md`` lists the methods from here, and :func:`parse_params` and
:func:`check_role` read them. The params and result Structs are in :mod:`.console`.

A new console method is one ``_declare`` below, then one handler, one command and one
renderer bound to it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

import msgspec

from .alerts import AlertId, AlertList, AlertsList, AlertView
from .console import (
    ROLES,
    AgentConfigView,
    AgentDetail,
    AgentId,
    AgentResolved,
    AgentRevoke,
    AgentShow,
    AgentsList,
    AgentView,
    Cancelled,
    ConfigLayerView,
    ConfigSet,
    ConfigUnset,
    DeliveryEvent,
    DeliveryRow,
    DriftRow,
    KeyCreate,
    KeyId,
    KeyView,
    Nothing,
    Params,
    ProgressEvent,
    Revoked,
    Role,
    ScheduleAdd,
    ScheduleList,
    ScheduleName,
    ScheduleRemoved,
    ScheduleView,
    TagChange,
    TagChanged,
    TagRemove,
    TaskCancel,
    TaskCreate,
    TaskCreated,
    TaskGet,
    TaskList,
    TaskView,
    TaskWait,
    TokenCreate,
    TokenId,
    TokenView,
)
from .errors import ErrorCode, ProtocolError
from .hooks import (
    Fingerprint,
    HookAdd,
    HookFingerprint,
    HookName,
    HookRemoved,
    HookRuns,
    HookRunView,
    HookView,
)
from .values import value_problem


class Method(msgspec.Struct, frozen=True, kw_only=True):
    """A console method: what a ``req`` names, what it takes, answers and sends meanwhile."""

    name: str
    """What a ``req`` frame's ``method`` says (``task.create``)."""
    params: type[Params]
    """The Struct its params are checked against (unknown keys refused by name)."""
    result: Any
    """The type of its ``res`` frame's ``result``: a ``View`` Struct or a list of them."""
    role: Role
    """The least admin token role that may call it (:data:`~.console.ROLES`, in order)."""
    summary: str
    """What it does, in one line (``docs/protocol.md``)."""
    events: tuple[tuple[str, type[msgspec.Struct]], ...] = ()
    """``event`` frames it sends before its response: (topic, the type of their ``data``)."""


METHODS: dict[str, Method] = {}
"""Every console method by name, in the order declared; ``action`` is not one of them: it is
a LimaCharlie action object, translated to one of these (:mod:`.actions`)."""


def _declare(name: str, params: type[Params], result: Any, role: Role, summary: str, *,
             events: tuple[tuple[str, type[msgspec.Struct]], ...] = ()) -> Method:
    method = Method(name=name, params=params, result=result, role=role, summary=summary, events=events)
    METHODS[name] = method
    return method


# -- agents and tags -------------------------------------------------------------------------

AGENTS_LIST = _declare("agents.list", AgentsList, list[AgentView], "viewer",
                       "The enrolled agents: identity, online, last seen, tags, and whether one is a possible clone.")
AGENT_GET = _declare("agent.get", AgentShow, AgentDetail, "viewer",
                     "One agent: identity, tags, online and last seen, its latest state and its newest state changes.")
TAG_ADD = _declare("tag.add", TagChange, TagChanged, "operator",
                   "Give an agent a tag: the active tag tasks it has not received reach it.")
TAG_RM = _declare("tag.rm", TagRemove, TagChanged, "operator", "Take a tag from an agent.")

# -- tasks -----------------------------------------------------------------------------------

TASK_CREATE = _declare("task.create", TaskCreate, TaskCreated, "operator",
                       "Queue a task for an agent, a tag, a selector or every agent.")
TASK_LIST = _declare("task.list", TaskList, list[DeliveryRow], "viewer",
                     "Deliveries, one per agent and task: pending ones unless a state is asked for.")
TASK_GET = _declare("task.get", TaskGet, TaskView, "viewer",
                    "A task and each of its deliveries, with their histories if asked.")
TASK_WAIT = _declare("task.wait", TaskWait, TaskView, "viewer",
                     "The task once no delivery of it can change any more (or at the timeout); an event for "
                     "every state change meanwhile.", events=(("delivery", DeliveryEvent),))
TASK_CANCEL = _declare("task.cancel", TaskCancel, Cancelled, "operator",
                       "Untask: queued deliveries cancelled, agents holding one told to cancel it.")
TASK_WATCH = _declare("task.watch", TaskWait, TaskView, "viewer",
                      "As task.wait, live: the task first, then every state change and progress report until "
                      "no delivery can change any more.",
                      events=(("task", TaskView), ("delivery", DeliveryEvent), ("progress", ProgressEvent)))

# -- alerts ----------------------------------------------------------------------------------

ALERTS_LIST = _declare("alerts.list", AlertsList, AlertList, "viewer",
                       "The distinct alerts, last seen first, each with its count; and the alerts agents sent "
                       "over their rate limit (counted, not stored).")
ALERT_GET = _declare("alert.get", AlertId, AlertView, "viewer", "One alert with its latest copy's details.")
ALERT_ACK = _declare("alert.ack", AlertId, AlertView, "operator",
                     "Acknowledge an alert (when, and its count then: later copies show as new since).")

# -- recurring schedules ---------------------------------------------------------------------

SCHEDULE_ADD = _declare("schedule.add", ScheduleAdd, ScheduleView, "operator",
                        "Add a recurring schedule: each firing creates an ordinary task.")
SCHEDULE_LIST = _declare("schedule.list", ScheduleList, list[ScheduleView], "viewer", "Every schedule.")
SCHEDULE_GET = _declare("schedule.get", ScheduleName, ScheduleView, "viewer",
                        "A schedule and the newest tasks it created.")
SCHEDULE_PAUSE = _declare("schedule.pause", ScheduleName, ScheduleView, "operator",
                          "Stop a schedule firing until it is resumed.")
SCHEDULE_RESUME = _declare("schedule.resume", ScheduleName, ScheduleView, "operator",
                           "Fire a paused schedule again, from its next firing after now.")
SCHEDULE_RM = _declare("schedule.rm", ScheduleName, ScheduleRemoved, "operator",
                       "Remove a schedule (the tasks it created stay).")

# -- credentials -----------------------------------------------------------------------------

TOKEN_CREATE = _declare("token.create", TokenCreate, TokenView, "admin",
                        "A new admin token, shown in this answer only.")
TOKEN_LIST = _declare("token.list", Nothing, list[TokenView], "admin", "The admin tokens (never the tokens).")
TOKEN_REVOKE = _declare("token.revoke", TokenId, Revoked, "admin",
                        "Revoke an admin token: the sessions open with it end at once (4010).")
KEY_CREATE = _declare("key.create", KeyCreate, KeyView, "admin",
                      "A new enrollment key, shown in this answer only.")
KEY_LIST = _declare("key.list", Nothing, list[KeyView], "admin", "The enrollment keys (never the keys).")
KEY_REVOKE = _declare("key.revoke", KeyId, Revoked, "admin", "Revoke an enrollment key: it enrolls no one.")
AGENT_REVOKE = _declare("agent.revoke", AgentRevoke, Revoked, "admin",
                        "Revoke an agent's token: its session ends at once (4010).")
AGENT_APPROVE = _declare("agent.approve", AgentId, AgentResolved, "admin",
                         "Accept a possible clone as an agent of its own.")
AGENT_MERGE = _declare("agent.merge", AgentId, AgentResolved, "admin",
                       "Let a possible clone take over the identity of the agent it is a clone of.")
AGENT_RM = _declare("agent.rm", AgentId, AgentResolved, "admin",
                    "Remove an agent: its token void, its unfinished deliveries cancelled, out of every target.")

# -- automation hooks (issue 20) -------------------------------------------------------------

HOOK_ADD = _declare("hook.add", HookAdd, HookView, "admin",
                    "Add a hook: a trigger (before or after an operation) and an action (script, web, email).")
HOOK_LIST = _declare("hook.list", Nothing, list[HookView], "operator", "Every hook (never its secret).")
HOOK_GET = _declare("hook.get", HookName, HookView, "operator", "A hook, its pending runs and its last run.")
HOOK_ENABLE = _declare("hook.enable", HookName, HookView, "admin", "Switch a hook on.")
HOOK_DISABLE = _declare("hook.disable", HookName, HookView, "admin",
                        "Switch a hook off: it fires no more (runs already queued are still delivered).")
HOOK_RM = _declare("hook.rm", HookName, HookRemoved, "admin", "Remove a hook, its queued runs and its records.")
HOOK_TEST = _declare("hook.test", HookName, HookRunView, "admin",
                     "Fire a hook now with a sample payload of its trigger; the run's outcome.")
HOOK_RUNS = _declare("hook.runs", HookRuns, list[HookRunView], "operator", "A hook's runs, newest first.")
HOOK_FINGERPRINT = _declare("hook.fingerprint", HookFingerprint, Fingerprint, "admin",
                            "The SHA-256 fingerprint of the certificate an HTTPS server shows tetherd.")


# -- agents' configuration -------------------------------------------------------------------

CONFIG_SET = _declare("config.set", ConfigSet, ConfigLayerView, "operator",
                      "Set configuration keys for a tag or an agent (checked now); online agents it reaches get "
                      "their new configuration at once.")
CONFIG_UNSET = _declare("config.unset", ConfigUnset, ConfigLayerView, "operator",
                        "Remove configuration keys from a tag or an agent: the layer below applies again.")
CONFIG_GET = _declare("config.get", AgentId, AgentConfigView, "viewer",
                      "An agent's desired configuration, where each key comes from, what it reported, and the drift.")
CONFIG_DRIFT = _declare("config.drift", Nothing, list[DriftRow], "viewer",
                        "The agents whose reported configuration is not their desired one.")


# -- reading a request -----------------------------------------------------------------------


def find(name: str) -> Method:
    """The method ``name``; UNKNOWN_METHOD, listing the known ones, if there is none."""
    method = METHODS.get(name)
    if method is None:
        known = ", ".join(sorted([*METHODS, "action"]))
        raise ProtocolError(ErrorCode.UNKNOWN_METHOD, f"unknown method {name!r} (known: {known})")
    return method


ID_PARAMS = ("task_id", "token_id", "key_id", "alert_id")
"""Params that name a numeric id: given as a number or as a string of digits (LimaCharlie's
clients send task ids as strings)."""


def _bad(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.INVALID_PARAMS, message)


def _ids_as_numbers(params: dict[str, Any]) -> dict[str, Any]:
    """``params`` with every id given as a string of digits turned into its number; any
    other string id is refused, by name."""
    fixed: dict[str, Any] | None = None
    if not isinstance(params, dict):
        return params  # refused by the Struct, with msgspec's message
    for name in ID_PARAMS:
        value = params.get(name)
        if isinstance(value, str):
            text = value.strip()
            if not (text.isascii() and text.isdigit() and len(text) <= 19):
                raise _bad(f"{name} must be a whole number (a number or a string of digits), not {value!r}")
            fixed = dict(params) if fixed is None else fixed
            fixed[name] = int(text)
    return params if fixed is None else fixed


def parse_params(name: str, params: dict[str, Any]) -> Params:
    """Validate ``params`` for the method ``name``; raise UNKNOWN_METHOD / INVALID_PARAMS."""
    method = find(name)
    problem = value_problem(params)
    if problem is not None:
        raise _bad(f"{name}: params hold {problem}")
    params = _ids_as_numbers(params)
    try:
        parsed = msgspec.convert(params, method.params, strict=True)
    except msgspec.ValidationError as exc:
        raise _bad(f"{name}: {exc}") from None
    parsed.check()
    return parsed


_RANK: dict[str, int] = {role: rank for rank, role in enumerate(ROLES)}


def check_role(role: str, name: str) -> None:
    """Raise FORBIDDEN unless a token of ``role`` may call the method ``name``: each role may
    call what the one before it in :data:`~.console.ROLES` may, and more."""
    method = find(name)
    if _RANK.get(role, -1) >= _RANK[method.role]:
        return
    if method.role == "admin":
        raise ProtocolError(ErrorCode.FORBIDDEN, f"only an admin token can call {name} (this one is {role})")
    raise ProtocolError(ErrorCode.FORBIDDEN, f"a {role} token cannot call {name}; ask for an {method.role} token")


# -- binding an implementation to each method ----------------------------------------------

F = TypeVar("F", bound=Callable[..., Any])


class Bindings(Generic[F]):
    """One implementation of each method for one side: the daemon's handlers, tetherctl's
    renderers. ``@bindings(METHOD, ...)`` binds a function to methods; a method bound twice
    is refused when the second binding is made (at import), and :meth:`unbound` names the
    methods still without one (each side's test asks for none)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        """What is bound (``handler``, ``renderer``): for the messages."""
        self._bound: dict[str, F] = {}

    def __call__(self, *methods: Method) -> Callable[[F], F]:
        def bind(function: F) -> F:
            for method in methods:
                earlier = self._bound.setdefault(method.name, function)
                if earlier is not function:
                    raise ValueError(f"{method.name} has two {self.kind}s: {earlier.__qualname__} and "
                                     f"{function.__qualname__}")
            return function

        return bind

    def __getitem__(self, method: Method) -> F:
        return self._bound[method.name]

    def unbound(self) -> list[str]:
        """The declared methods without a binding, by name."""
        return [name for name in METHODS if name not in self._bound]
